"""Each CPU variant of the compiled kernels on this machine, side by side in one run.

Loads every variant the CPU runs (``muvera.native.load_variant``) and times, on one thread,
best of ``--repeats`` rounds that alternate the variants: FDE encoding of 1,000 documents
(180 unit tokens, d = 128, the default config with filling), exact MaxSim of one 32-token
query against 1,000 documents of 180 tokens (float32 and float16 rows), and the int8 graph
walk (200 queries, k = 10, ef = 100) over an hnswlib graph of 5,000 rows of 1,024 dims,
the token-cell table of that query (8,192 centroids) and the cell scan of the 1,000
documents' codes; the numpy steps, numpy MaxSim and a BLAS table product (one BLAS thread)
on the same inputs for reference; then this core's limits (one-thread sgemm GFLOP/s, memory
and cache copy GB/s) and each kernel's rate against them.
With ``--march-native`` a build of the same sources with ``-march=native`` (what installs
used before the variants) is compiled into a temporary folder and timed alongside.
Prints the CPU flags, a table, and writes ``benchmarks/results/variants.json``.

Usage: ``python benchmarks/bench_variants.py [--repeats 5] [--march-native]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# before numpy loads OpenBLAS, which reads its thread count once (runs before this fix,
# e.g. variants.json, timed numpy's rows on every core's BLAS threads)
os.environ["MUVERA_NUM_THREADS"] = "1"  # per-core numbers: the variants differ per core
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's row too

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, machine  # noqa: E402

from muvera import FDEConfig, FDEEncoder, __version__, native  # noqa: E402
from muvera.cells import _numpy_scores  # noqa: E402
from muvera.fde.compiled_steps import CompiledFDE  # noqa: E402
from muvera.fde.numpy_steps import NumpyFDE  # noqa: E402
from muvera.scoring import _spans_numpy  # noqa: E402
from muvera.stores.hnsw_graph import QuantizedGraph  # noqa: E402


def march_native_build(where: Path) -> Any:
    """The best variant's sources compiled with -march=native (for comparison only)."""
    import ctypes
    import importlib.util

    spec = importlib.util.spec_from_file_location("hatch_build", ROOT / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    os.environ["MUVERA_CFLAGS"] = "-march=native"
    try:
        out = where / "libmuvera_march_native.so"
        error = hook.compile_kernel(ROOT, out, "generic")
    finally:
        del os.environ["MUVERA_CFLAGS"]
    if error is not None:
        raise SystemExit(error)
    return native.NativeLibrary(ctypes.CDLL(str(out)), out, "-march=native")


def limits(repeats: int) -> dict[str, float]:
    """This core's limits, best of ``repeats``: sgemm GFLOP/s (numpy's BLAS on one thread,
    a 4,096 x 512 by 512 x 512 product) and copy GB/s (bytes copied) of 256 MiB (memory)
    and of 1 MiB 64 times over (the cache: the size of a 32-lane cell table)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4096, 512)).astype(np.float32)
    b = rng.standard_normal((512, 512)).astype(np.float32)
    big, small = np.ones(64 << 20, np.float32), np.ones(1 << 18, np.float32)
    out: dict[str, list[float]] = {"sgemm_gflops": [], "copy_gbps": [], "cache_copy_gbps": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        out["sgemm_gflops"].append(2 * 4096 * 512 * 512 / (time.perf_counter() - t0) / 1e9)
        dst = np.empty_like(big)
        t0 = time.perf_counter()
        np.copyto(dst, big)
        out["copy_gbps"].append(big.nbytes / (time.perf_counter() - t0) / 1e9)
        dst = np.empty_like(small)
        t0 = time.perf_counter()
        for _ in range(64):
            np.copyto(dst, small)
        out["cache_copy_gbps"].append(64 * small.nbytes / (time.perf_counter() - t0) / 1e9)
    return {key: max(values) for key, values in out.items()}


# work of the timed calls of measure(): multiply-adds x 2 (flops), table bytes gathered
MAXSIM_FLOP = 2 * 1000 * 180 * 32 * 128
TABLE_FLOP = 2 * 8192 * 128 * 32
SCAN_BYTES = 1000 * 180 * 32 * 4  # one 32-lane float32 table row per token


def measure(repeats: int, march_native: bool) -> dict[str, dict[str, float]]:
    import hnswlib

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000 * 180, 128)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    lengths = np.full(1000, 180)
    offsets = np.cumsum(lengths) - lengths
    half = x.astype(np.float16)
    query, q_offsets = x[:32].copy(), np.array([0, 32])
    encoder = FDEEncoder(FDEConfig(dimension=128, fill_empty_partitions=True))
    rows = rng.standard_normal((5000, 1024)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        index = hnswlib.Index(space="ip", dim=1024)
        index.init_index(5000, M=12, ef_construction=100, random_seed=1)
        index.add_items(rows, np.arange(5000), num_threads=1)
        index.save_index(f"{tmp}/g.bin")
        graph = QuantizedGraph.read(Path(f"{tmp}/g.bin"), 1024)
    assert graph is not None
    walk_queries = rng.standard_normal((200, 1024)).astype(np.float32)
    centroids = rng.standard_normal((8192, 128)).astype(np.float32)
    codes = rng.integers(0, 8192, x.shape[0]).astype(np.uint16)
    table = np.empty((8192, 32), np.float32)
    scores = np.empty(1000, np.float32)
    libraries = {v: native.load_variant(v) for v in native.VARIANTS}
    runnable: dict[str, Any] = {v: lib for v, lib in libraries.items() if lib is not None}
    if march_native:
        runnable["-march=native build"] = march_native_build(Path(tempfile.mkdtemp()))
    runnable["numpy"] = None  # the numpy steps and MaxSim, for reference
    best: dict[str, dict[str, float]] = {v: {} for v in runnable}
    out = np.empty((1, 1000), np.float32)
    for r in range(repeats):
        order = list(runnable) if r % 2 == 0 else list(runnable)[::-1]
        for variant in order:
            lib = runnable[variant]
            steps = CompiledFDE(encoder.plan, lib) if lib is not None else NumpyFDE(encoder.plan)
            timings = {}
            t0 = time.perf_counter()
            steps.encode(x, lengths, True)
            timings["fde_docs_per_s"] = 1000 / (time.perf_counter() - t0)
            for name, tokens in (("maxsim_f32_ms", x), ("maxsim_f16_ms", half)):
                t0 = time.perf_counter()
                if lib is None:
                    _spans_numpy(tokens, offsets, lengths, query, q_offsets)
                else:
                    lib.maxsim(tokens, offsets, lengths, query, q_offsets, out, 1)
                timings[name] = 1000 * (time.perf_counter() - t0)
            t0 = time.perf_counter()
            if lib is None:
                np.matmul(centroids, query.T, out=table)
            else:
                lib.cell_table(centroids, query, table)
            timings["cell_table_ms"] = 1000 * (time.perf_counter() - t0)
            t0 = time.perf_counter()
            if lib is None:
                _numpy_scores(table, codes, offsets, lengths, scores)
            else:
                lib.cell_scores(table, codes, offsets, lengths, scores, 1)
            timings["cell_scan_ms"] = 1000 * (time.perf_counter() - t0)
            if lib is not None:
                t0 = time.perf_counter()
                graph.search(lib, walk_queries, 10, 100, 1)
                timings["graph_queries_per_s"] = 200 / (time.perf_counter() - t0)
            for key, value in timings.items():
                better = max if key.endswith("_per_s") else min
                best[variant][key] = better(best[variant].get(key, value), value)
    return best


def markdown(result: dict) -> str:
    lines = [
        f"{result['machine']['cpu']} ({' '.join(result['machine']['flags'])}), one thread:",
        "",
        "| variant | FDE documents/s | MaxSim float32 ms | MaxSim float16 ms | graph walk q/s "
        "| cell table ms | cell scan ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def cell(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    for variant, v in result["variants"].items():
        lines.append(
            f"| {variant} | {v['fde_docs_per_s']:,.0f} | {v['maxsim_f32_ms']:.1f} | "
            f"{v['maxsim_f16_ms']:.1f} | {cell(v.get('graph_queries_per_s'), ',.0f')} | "
            f"{cell(v.get('cell_table_ms'), '.2f')} | {cell(v.get('cell_scan_ms'), '.2f')} |"
        )
    if "limits" in result:  # runs since the limits were measured
        lines += limits_table(result)
    return "\n".join(lines)


def limits_table(result: dict) -> list[str]:
    """The kernels' rates against this core's limits (sgemm for products, copy bandwidth
    for the cell scan's gathers)."""
    top = result["limits"]
    lines = [
        "",
        f"Against this core's limits (one thread: sgemm {top['sgemm_gflops']:.0f} GFLOP/s; "
        f"copy {top['cache_copy_gbps']:.1f} GB/s within the cache, "
        f"{top['copy_gbps']:.1f} GB/s from memory; the cell scan gathers table rows, "
        "which stay in the cache):",
        "",
        "| variant | MaxSim float32 GFLOP/s | MaxSim float16 GFLOP/s | cell table GFLOP/s "
        "| cell scan GB/s of table rows (of cache copy) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for variant, v in result["variants"].items():
        rates = [
            MAXSIM_FLOP / v["maxsim_f32_ms"] / 1e6,
            MAXSIM_FLOP / v["maxsim_f16_ms"] / 1e6,
            TABLE_FLOP / v["cell_table_ms"] / 1e6,
        ]
        flops = " | ".join(f"{r:.0f} ({r / top['sgemm_gflops']:.0%})" for r in rates)
        scan = SCAN_BYTES / v["cell_scan_ms"] / 1e6
        cache = top["cache_copy_gbps"]
        lines.append(f"| {variant} | {flops} | {scan:.1f} ({scan / cache:.0%}) |")
    return lines


def refresh_docs(results_file: Path) -> None:
    """Re-render the docs/ tables built from ``results_file`` (benchmarks/render_docs.py)."""
    from render_docs import refresh

    refresh(results_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "variants.json"
    )
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print a results table")
    parser.add_argument(
        "--march-native", action="store_true", help="also time a -march=native build"
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    print(describe(machine()))
    result = {
        "muvera_version": __version__,
        "machine": machine(),
        "variants": measure(args.repeats, args.march_native),
        "limits": limits(args.repeats),
    }
    print(markdown(result))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    refresh_docs(args.out)


if __name__ == "__main__":
    main()
