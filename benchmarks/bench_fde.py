"""FDE encoding throughput: muvera vs fastembed's Muvera vs the paper-literal reference.

All rates are measured in one run on this machine (so ratios are meaningful even when
absolute numbers drift). Prints a table and writes ``benchmarks/results/fde_encode.json``.

* muvera: ``FDEEncoder.encode_documents`` / ``encode_queries`` on a batch of 1,000 items
  (best of ``--repeats``) with the default kernel (the compiled C kernel when it is built),
  and the same with ``kernel="numpy"`` (the pure numpy/scipy kernel).
* fastembed: ``fastembed.postprocess.Muvera`` constructed directly (no model), one
  ``process_document`` / ``process_query`` call per item, as its API works. fastembed
  always fills empty partitions for documents.
* reference: ``tests/reference.py``, the literal transcription of the C++ (per-point,
  per-partition loops) with its random matrices cached, on a few items.
* matmul: the time of the sgemm calls alone: tokens x [AMS | SimHash] for the numpy
  kernel (its floor), tokens x SimHash for the compiled kernel, to show where the rest of
  the time goes.
* stream: 100,000 documents encoded in one call into an ``np.memmap``, with tracemalloc's
  peak of Python-visible allocations.

Usage: ``python benchmarks/bench_fde.py [--quick]``
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import reference  # noqa: E402  (the literal reference lives with the tests)

sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import describe, machine  # noqa: E402

from muvera import FDEConfig, FDEEncoder, __version__  # noqa: E402

reference.simhash_matrix = functools.lru_cache(maxsize=None)(reference.simhash_matrix)
reference.ams_matrix = functools.lru_cache(maxsize=None)(reference.ams_matrix)

DOC_TOKENS, QUERY_TOKENS = 180, 32


def unit_clouds(rng: np.random.Generator, n: int, tokens: int, dim: int) -> list[np.ndarray]:
    x = rng.standard_normal((n, tokens, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    return list(x)


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_floor(encoder: FDEEncoder, tokens: np.ndarray, repeats: int) -> float:
    """Seconds for the sgemm calls of ``encoder``'s kernel alone (same operands and blocks)."""
    from muvera.fde.numpy_steps import _TOKEN_BLOCK

    steps = encoder._steps
    if encoder.kernel == "native":  # one tokens x SimHash sgemm per chunk
        step, operand = encoder.chunk_tokens, encoder.plan.simhash
    else:  # tokens x [AMS | SimHash] per token block
        step, operand = _TOKEN_BLOCK, steps.fused
    out = np.empty((step, operand.shape[1]), dtype=np.float32)

    def run() -> None:
        for s in range(0, tokens.shape[0], step):
            block = tokens[s : s + step]
            np.matmul(block, operand, out=out[: block.shape[0]])

    return best_time(run, repeats)


def bench_config(name: str, config: FDEConfig, n: int, repeats: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    d = config.dimension
    docs = unit_clouds(rng, n, DOC_TOKENS, d)
    queries = unit_clouds(rng, n, QUERY_TOKENS, d)
    encoder = FDEEncoder(config)
    numpy_encoder = FDEEncoder(config, kernel="numpy")
    encoder.encode_documents(docs[:50])  # warm-up (scratch buffers, BLAS threads)
    numpy_encoder.encode_documents(docs[:50])
    try:
        from fastembed.postprocess import Muvera
    except ImportError:
        fastembed = None
    else:
        fastembed = Muvera(
            dim=d,
            k_sim=config.num_simhash_projections,
            dim_proj=config.block_dimension,
            r_reps=config.num_repetitions,
            random_seed=config.seed,
        )
    fe_docs, fe_queries = docs[: max(50, n // 5)], queries[: max(100, n // 2)]

    # Interleaved rounds: each contender gets the same quiet and noisy periods of the
    # machine; the best round of each is reported.
    times: dict[str, float] = {}

    def timed(key: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        times[key] = min(times.get(key, float("inf")), time.perf_counter() - t0)

    for _ in range(repeats):
        timed("docs", lambda: encoder.encode_documents(docs))
        timed("queries", lambda: encoder.encode_queries(queries))
        timed("np_docs", lambda: numpy_encoder.encode_documents(docs))
        timed("np_queries", lambda: numpy_encoder.encode_queries(queries))
        if fastembed is not None:
            timed("fe_docs", lambda: [fastembed.process_document(x) for x in fe_docs])
            timed("fe_queries", lambda: [fastembed.process_query(x) for x in fe_queries])
    tokens = np.concatenate(docs)
    t_mm_docs = matmul_floor(encoder, tokens, repeats)
    t_mm_fused = matmul_floor(numpy_encoder, tokens, repeats)
    fused_width = numpy_encoder._steps.fused.shape[1]
    row = {
        "name": name,
        "config": config.to_dict(),
        "output_dimension": config.output_dimension,
        "kernel": encoder.kernel,
        "muvera_docs_per_s": n / times["docs"],
        "muvera_queries_per_s": n / times["queries"],
        "numpy_kernel_docs_per_s": n / times["np_docs"],
        "numpy_kernel_queries_per_s": n / times["np_queries"],
        "matmul_share_of_document_time": t_mm_docs / times["docs"],
        "numpy_kernel_matmul_share_of_document_time": t_mm_fused / times["np_docs"],
        "matmul_gflops": 2 * n * DOC_TOKENS * d * fused_width / t_mm_fused / 1e9,
        "fastembed_docs_per_s": None,
        "fastembed_queries_per_s": None,
    }
    if fastembed is not None:
        row["fastembed_docs_per_s"] = len(fe_docs) / times["fe_docs"]
        row["fastembed_queries_per_s"] = len(fe_queries) / times["fe_queries"]
        row["docs_speedup_vs_fastembed"] = row["muvera_docs_per_s"] / row["fastembed_docs_per_s"]
        row["queries_speedup_vs_fastembed"] = (
            row["muvera_queries_per_s"] / row["fastembed_queries_per_s"]
        )

    # The literal reference, with matrices cached: a handful of items is plenty.
    ref_docs, ref_queries = docs[:3], queries[:10]
    reference.reference_fde(ref_docs[0], config, document=True)  # fill the matrix cache
    t0 = time.perf_counter()
    for x in ref_docs:
        reference.reference_fde(x, config, document=True)
    row["reference_docs_per_s"] = len(ref_docs) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for x in ref_queries:
        reference.reference_fde(x, config, document=False)
    row["reference_queries_per_s"] = len(ref_queries) / (time.perf_counter() - t0)
    return row


class LazyDocuments(Sequence):
    """``n`` documents of ``tokens`` rows, each a view into one shared pool (no copies)."""

    def __init__(self, n: int, tokens: int, dim: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        pool = rng.standard_normal((50_000, dim)).astype(np.float32)
        self.pool = pool / np.linalg.norm(pool, axis=1, keepdims=True)
        self.n, self.tokens = n, tokens

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        i %= self.n
        start = (i * 7919) % (self.pool.shape[0] - self.tokens)
        return self.pool[start : start + self.tokens]


def bench_stream(n: int, config: FDEConfig) -> dict:
    docs = LazyDocuments(n, DOC_TOKENS, config.dimension)
    encoder = FDEEncoder(config)
    with tempfile.TemporaryDirectory() as tmp:
        out = np.lib.format.open_memmap(
            Path(tmp) / "fdes.npy", mode="w+", dtype=np.float32, shape=(n, config.output_dimension)
        )
        tracemalloc.start()
        t0 = time.perf_counter()
        encoder.encode_documents(docs, out=out)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        checksum = float(np.abs(out[:: max(1, n // 100)]).sum())
        del out
    token_bytes = n * DOC_TOKENS * config.dimension * 4
    return {
        "documents": n,
        "config": config.to_dict(),
        "seconds": elapsed,
        "docs_per_s": n / elapsed,
        "peak_traced_bytes": peak,
        "token_matrix_bytes": token_bytes,
        "token_matrix_times_R_bytes": token_bytes * config.num_repetitions,
        "checksum": checksum,
    }


def markdown_table(result: dict) -> str:
    """The README's table, from a JSON file this script wrote."""

    def fmt(v, spec=",.0f"):
        return "-" if v is None else format(v, spec)

    lines = [
        "| config (d = token dim) | FDE dim | muvera docs/s | numpy kernel docs/s "
        "| fastembed docs/s | speed-up | muvera queries/s | fastembed queries/s | speed-up "
        "| literal reference docs/s | sgemm % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['name']} | {r['output_dimension']:,} | {fmt(r['muvera_docs_per_s'])} "
            f"| {fmt(r.get('numpy_kernel_docs_per_s'))} | {fmt(r['fastembed_docs_per_s'])} "
            f"| {fmt(r.get('docs_speedup_vs_fastembed'), '.1f')}x "
            f"| {fmt(r['muvera_queries_per_s'])} | {fmt(r['fastembed_queries_per_s'])} "
            f"| {fmt(r.get('queries_speedup_vs_fastembed'), '.1f')}x "
            f"| {fmt(r['reference_docs_per_s'], ',.1f')} "
            f"| {100 * r['matmul_share_of_document_time']:.0f}% |"
        )
    stream = result.get("stream")
    if stream:
        lines.append("")
        lines.append(
            f"Streaming {stream['documents']:,} documents of {result['doc_tokens']} tokens "
            f"(d = 128, default config with filling) into an `np.memmap` in one call: "
            f"{stream['docs_per_s']:,.0f} documents/s, peak traced allocations "
            f"{stream['peak_traced_bytes'] / 2**20:,.1f} MiB, against "
            f"{stream['token_matrix_bytes'] / 2**30:,.1f} GiB of input tokens."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="FDE encoding benchmark")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--no-stream", action="store_true", help="skip the 100,000-document run")
    parser.add_argument(
        "--markdown", type=Path, metavar="JSON", help="print the README table of a results file"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "fde_encode.json"
    )
    args = parser.parse_args()
    if not args.markdown:
        print(describe(machine()))
    if args.markdown:
        print(markdown_table(json.loads(args.markdown.read_text())))
        return
    n = 100 if args.quick else 1000
    n_stream = 2000 if args.quick else 100_000

    rows = []
    for d in (128, 48):
        for name, cfg in (
            ("R20 k5 ams16 fill", FDEConfig(dimension=d, fill_empty_partitions=True)),
            (
                "R10 k4 ams8",
                FDEConfig(
                    dimension=d,
                    num_repetitions=10,
                    num_simhash_projections=4,
                    projection_dimension=8,
                ),
            ),
        ):
            rows.append(bench_config(f"{name} d={d}", cfg, n, args.repeats))
            r = rows[-1]
            print(f"done {r['name']}", file=sys.stderr)
    stream = None
    if not args.no_stream:
        stream = bench_stream(n_stream, FDEConfig(dimension=128, fill_empty_partitions=True))

    def fmt(v, spec=",.0f"):
        return "-" if v is None else format(v, spec)

    header = (
        f"{'config':<24}{'dim':>7}{'muvera doc/s':>14}{'numpy krn':>11}{'fastembed':>11}{'x':>7}"
        f"{'ref doc/s':>11}{'muvera q/s':>12}{'fastembed':>11}{'x':>7}{'ref q/s':>9}{'sgemm%':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        cells = [
            f"{r['name']:<24}",
            f"{r['output_dimension']:>7}",
            f"{fmt(r['muvera_docs_per_s']):>14}",
            f"{fmt(r['numpy_kernel_docs_per_s']):>11}",
            f"{fmt(r['fastembed_docs_per_s']):>11}",
            f"{fmt(r.get('docs_speedup_vs_fastembed'), '.1f'):>7}",
            f"{fmt(r['reference_docs_per_s'], ',.1f'):>11}",
            f"{fmt(r['muvera_queries_per_s']):>12}",
            f"{fmt(r['fastembed_queries_per_s']):>11}",
            f"{fmt(r.get('queries_speedup_vs_fastembed'), '.1f'):>7}",
            f"{fmt(r['reference_queries_per_s'], ',.1f'):>9}",
            f"{100 * r['matmul_share_of_document_time']:>7.0f}%",
        ]
        print("".join(cells))
    mib, gib = 2**20, 2**30
    if stream is not None:
        print(
            f"\nstreamed {stream['documents']:,} documents (d=128, {DOC_TOKENS} tokens) into a "
            f"memmap: {stream['docs_per_s']:,.0f} docs/s, peak traced memory "
            f"{stream['peak_traced_bytes'] / mib:,.1f} MiB (token matrix "
            f"{stream['token_matrix_bytes'] / gib:,.1f} GiB, x R = "
            f"{stream['token_matrix_times_R_bytes'] / gib:,.0f} GiB)"
        )

    print(f"(muvera = the {rows[0]['kernel']} kernel; numpy krn = kernel='numpy')")

    result = {
        "muvera_version": __version__,
        "machine": {
            **machine(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "doc_tokens": DOC_TOKENS,
        "query_tokens": QUERY_TOKENS,
        "batch": n,
        "rows": rows,
        "stream": stream,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    refresh_docs(args.out)  # the docs/ tables built from this file


def refresh_docs(results_file: Path) -> None:
    """Re-render the docs/ tables built from ``results_file`` (benchmarks/render_docs.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from render_docs import refresh

    refresh(results_file)


if __name__ == "__main__":
    main()
