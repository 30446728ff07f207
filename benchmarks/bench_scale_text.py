"""The default index at scale on a text-like corpus (``scale_corpus.py``: documents
resampled from the shared model's real token vectors, real queries).

The corpus is added in steps (10k, 30k, 100k documents by default) to one index (hnswlib,
default settings, the ``--token-dtype`` asked for), ``--batch`` documents per ``add``.
After each step it records: the build rate of the step and overall, bytes per document on
disk split into token file / FDE graph / the rest, the writer's peak RSS (which includes
the corpus generator's ~0.6 GiB of source vectors), and, in a fresh read-only process (a
reader as a user would start one): its peak RSS, per-query latency of the query sample
searched one at a time (p50 / p95, after one warm-up pass), and the share of the exact
MaxSim top-10 (brute force over the float16 documents, cached in ``benchmarks/.cache``)
that the two-stage top-10 finds.

The writer closes the index while the reader runs (so their memory does not add up) and
reopens it for the next step. To tell a slow search from one that reads the disk, the
reader also reports its major page faults during the timed pass, the writer process's RSS
and the machine's page cache (``Cached`` in /proc/meminfo) at that time. ``--keep`` keeps
the index folder (inside ``--dir``) so that ``--reader`` can search it again alone.

Usage: ``python benchmarks/bench_scale_text.py [--steps 10000,30000,100000]
[--token-dtype float16|int8|int4] [--final-projection N] [--bulk] [--queries 200]
[--dir DIR] [--keep] [--sweep 200,400] [--out benchmarks/results/scale_text_int8.json]``
(``--sweep``: the reader also searches with these numbers of candidates); a kept index
searched again by a fresh reader, alone on the machine:
``python benchmarks/bench_scale_text.py --search-again INDEX [--queries 100] [--seed 0]
[--sweep 200,400] [--out RESULTS.json]`` (the same query sample and cached ground truth;
the index must be one this script built, documents 0 .. n-1 of the corpus; the row is
added to the results file's ``search_again`` list and to its table).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, machine, memory  # noqa: E402
from runner import bench_main  # noqa: E402
from scale_corpus import TextLikeCorpus  # noqa: E402

from muvera import FDEConfig, Index, __version__  # noqa: E402
from muvera.index.manifest import generation_files  # noqa: E402
from muvera.scoring import maxsim_spans  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
GT_BLOCK = 5000  # documents per block of the brute-force ground truth
STORE_EXACT_QUERIES = 20  # queries the reader also ranks with the index's search_exact
_READER_ONLY = ("times_ms", "ids", "sweep", "store_exact_ids")  # not copied into a row


def ground_truth(corpus: TextLikeCorpus, n_docs: int, queries: list[np.ndarray]) -> np.ndarray:
    """Exact MaxSim top-10 document numbers of every query over documents 0 .. n_docs
    (float16 tokens, as generated), cached per corpus parameters."""
    CACHE.mkdir(exist_ok=True)
    mark = hashlib.sha1(np.concatenate(queries).tobytes()).hexdigest()[:8]  # these queries
    key = f"scale_text-s{corpus.seed}-n{corpus.noise}-{n_docs}-{len(queries)}-{mark}.npy"
    if (CACHE / key).is_file():
        return np.load(CACHE / key)
    q_all = np.concatenate(queries)
    q_off = np.concatenate([[0], np.cumsum([len(q) for q in queries])]).astype(np.int64)
    best = np.full((len(queries), 10), -1, np.int64)
    best_s = np.full((len(queries), 10), -np.inf, np.float32)
    for start in range(0, n_docs, GT_BLOCK):
        docs = corpus.documents(start, min(n_docs, start + GT_BLOCK))
        lengths = np.array([len(d) for d in docs], np.int64)
        scores = maxsim_spans(np.concatenate(docs), np.cumsum(lengths) - lengths, lengths,
                              q_all, q_off)  # fmt: skip
        ids = np.broadcast_to(np.arange(start, start + len(docs)), scores.shape)
        all_s, all_i = np.concatenate([best_s, scores], 1), np.concatenate([best, ids], 1)
        top = np.argsort(-all_s, axis=1, kind="stable")[:, :10]
        best_s, best = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    np.save(CACHE / key, best)
    return best


def read_side(path: Path, queries_file: Path, sweep: list[int] | None = None) -> dict[str, Any]:
    """Run in a fresh process: open read-only, search every query alone twice (the first
    pass warms up), report latencies of the second, the top-10 ids, RSS after opening and
    peak RSS (the interpreter and numpy included; searches with every ``candidates`` of
    ``sweep`` included, each with the same two passes: their latencies and top-10 ids),
    then the top-10 of ``search_exact`` for the first :data:`STORE_EXACT_QUERIES` queries
    (after the peak is taken: it reads every stored token)."""
    with np.load(queries_file) as z:
        queries = [z[f"arr_{i}"] for i in range(len(z.files))]
    with Index.open(path, mode="r") as index:
        rss_open = memory("VmRSS")
        default_candidates = index.default_candidates
        t0 = time.perf_counter()
        index.search([queries[0]], k=10)  # builds what a first search builds (cell postings)
        first_s = time.perf_counter() - t0
        for q in queries:
            index.search([q], k=10)
        times, ids = [], []
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
        for q in queries:
            t0 = time.perf_counter()
            result = index.search([q], k=10)
            times.append(1000 * (time.perf_counter() - t0))
            ids.append([int(x) for x in result.ids[0]])
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults
        swept = {}
        for candidates in sweep or []:
            for q in queries:
                index.search([q], k=10, candidates=candidates)
            c_times, c_ids = [], []
            for q in queries:
                t0 = time.perf_counter()
                result = index.search([q], k=10, candidates=candidates)
                c_times.append(1000 * (time.perf_counter() - t0))
                c_ids.append([int(x) for x in result.ids[0]])
            swept[candidates] = {"times_ms": c_times, "ids": c_ids}
        rss_peak = memory("VmHWM")  # before the brute force maps every token in
        t0 = time.perf_counter()  # the index's own brute force (same stored tokens)
        exact = [[int(x) for x in index.search_exact([q], k=10).ids[0]]
                 for q in queries[:STORE_EXACT_QUERIES]]  # fmt: skip
        exact_s = (time.perf_counter() - t0) / max(1, len(exact))
    return {"times_ms": times, "ids": ids, "rss_open": rss_open, "rss_peak": rss_peak,
            "sweep": swept, "store_exact_ids": exact, "store_exact_s": exact_s,
            "first_search_s": first_s, "major_faults_per_query": faults / len(queries),
            "default_candidates": default_candidates,
            "page_cache": _meminfo("Cached"), "writer_rss": _rss(os.getppid())}  # fmt: skip


def _found(ids: list[list[int]], truth: list[list[int]]) -> float:
    """The share of each truth top-10 that ``ids`` holds, averaged (over ``truth``'s
    queries: the first ones of ``ids``)."""
    return float(
        np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids[: len(truth)], truth, strict=True)])
    )


def _sweep_rows(reader: dict[str, Any], truth: np.ndarray) -> list[dict[str, Any]]:
    """Per number of candidates of the reader's sweep: p50 / p95, the share found of the
    float16 brute force and of the index's own (``search_exact``, the first queries)."""
    rows = []
    for candidates, got in reader["sweep"].items():
        pairs = list(zip(got["ids"], truth.tolist(), strict=True))
        rows.append({
            "candidates": int(candidates),
            "p50_ms": float(np.percentile(got["times_ms"], 50)),
            "p95_ms": float(np.percentile(got["times_ms"], 95)),
            "exact_top10_found": _found(got["ids"], truth.tolist()),
            "exact_top1_first": float(np.mean([a[0] == b[0] for a, b in pairs])),
            "store_exact_top10_found": _found(got["ids"], reader["store_exact_ids"]),
        })  # fmt: skip
    return rows


def _meminfo(key: str) -> int:
    """A /proc/meminfo value in bytes (0 where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return 1024 * int(line.split()[1])
    return 0


def _rss(pid: int) -> int:
    """The resident memory of process ``pid`` in bytes (0 where unknown)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return 1024 * int(line.split()[1])
    return 0


def search_again(argv: list[str]) -> None:
    """A kept index searched by a fresh reader process: the row's reader columns."""
    parser = argparse.ArgumentParser(prog="bench_scale_text.py --search-again")
    parser.add_argument("index", type=Path)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also add the row to this results file")
    parser.add_argument("--sweep", default="", help="also search with these candidates")
    args = parser.parse_args(argv)
    corpus = TextLikeCorpus.from_cache(seed=args.seed)
    queries = corpus.queries(args.queries)
    with Index.open(args.index, mode="r") as index:
        n_docs = len(index)
        sizes = disk(args.index, index)
    with tempfile.TemporaryDirectory() as tmp:
        qfile = Path(tmp) / "queries.npz"
        np.savez(qfile, *queries)
        reader = json.loads(subprocess.run(
            [sys.executable, __file__, "--reader", str(args.index), str(qfile), args.sweep],
            capture_output=True, text=True, check=True,
        ).stdout)  # fmt: skip
    truth = ground_truth(corpus, n_docs, queries)
    pairs = list(zip(reader["ids"], truth.tolist(), strict=True))
    row = {
        "documents": n_docs,
        "total_bytes_per_doc": sum(sizes.values()) / n_docs,
        "bytes_per_doc": {k: v / n_docs for k, v in sizes.items()},
        "p50_ms": float(np.percentile(reader["times_ms"], 50)),
        "p95_ms": float(np.percentile(reader["times_ms"], 95)),
        "exact_top10_found": _found(reader["ids"], truth.tolist()),
        "exact_top1_first": float(np.mean([a[0] == b[0] for a, b in pairs])),
        "store_exact_top10_found": _found(reader["ids"], reader["store_exact_ids"]),
        "sweep": _sweep_rows(reader, truth),
        **{k: v for k, v in reader.items() if k not in _READER_ONLY},
    }
    print(json.dumps(row, indent=1))
    if args.out:  # a results file of this script: the row joins its "search_again" list
        result = json.loads(args.out.read_text())
        if result["machine"] != machine():
            raise SystemExit(f"{args.out} was measured on another machine")
        result.setdefault("search_again", []).append(row)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(markdown(result))


def disk(path: Path, index: Index) -> dict[str, int]:
    """Bytes of the committed generation's files (superseded ones still in their grace
    period are not counted), plus the manifest and encoder."""
    names = generation_files(index.manifest) | {"manifest.json", "encoder.npz"}
    sizes = {n: (path / n).stat().st_size for n in names if (path / n).is_file()}
    tokens = sizes.get(index.manifest["tokens"]["file"], 0)
    graph = sizes.get((index.manifest["store"]["entry"] or {}).get("file", ""), 0)
    return {"tokens": tokens, "graph": graph, "other": sum(sizes.values()) - tokens - graph}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    corpus = TextLikeCorpus.from_cache(seed=args.seed)
    queries = corpus.queries(args.queries)
    steps = [int(s) for s in args.steps.split(",")]
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = (tempfile.mkdtemp(dir=args.dir) if args.keep
               else stack.enter_context(tempfile.TemporaryDirectory(dir=args.dir)))  # fmt: skip
        path = Path(tmp) / "ix"
        qfile = Path(tmp) / "queries.npz"
        np.savez(qfile, *queries)
        config = FDEConfig(dimension=corpus.dimension, num_repetitions=args.repetitions,
                           final_projection_dimension=args.final_projection)  # fmt: skip
        options: dict[str, Any] = {}
        if args.ef_construction:
            options["ef_construction"] = args.ef_construction
        if args.token_cells:
            options["token_cells"] = args.token_cells
        index = Index.create(
            path, config, token_dtype=args.token_dtype, store_options=options or None
        )
        built, total_s = 0, 0.0
        for step in steps:
            step_s, first = 0.0, built
            with index.bulk() if args.bulk else contextlib.nullcontext():
                while built < step:
                    stop = min(step, built + args.batch)
                    docs = corpus.documents(built, stop)
                    t0 = time.perf_counter()
                    index.add(list(range(built, stop)), docs)
                    step_s += time.perf_counter() - t0
                    built = stop
                    print(f"added {built} ({(built - first) / step_s:.0f} docs/s this step)",
                          file=sys.stderr, flush=True)  # fmt: skip
                t0 = time.perf_counter()
            step_s += time.perf_counter() - t0  # the bulk's commit
            total_s += step_s
            sizes = disk(path, index)
            writer_rss = memory("VmHWM")
            index.close()  # the writer's memory is freed while the reader runs
            reader = json.loads(subprocess.run(
                [sys.executable, __file__, "--reader", str(path), str(qfile), args.sweep],
                capture_output=True, text=True, check=True,
            ).stdout)  # fmt: skip
            if step != steps[-1]:
                index = Index.open(path)
            truth = ground_truth(corpus, built, queries)
            pairs = list(zip(reader["ids"], truth.tolist(), strict=True))
            top1 = [ids[0] == t[0] for ids, t in pairs]
            row = {
                "documents": built,
                "tokens_per_doc": float(np.mean([len(d) for d in corpus.documents(0, 200)])),
                "step_docs_per_s": (built - first) / step_s,
                "docs_per_s": built / total_s,
                "bytes_per_doc": {k: v / built for k, v in sizes.items()},
                "total_bytes_per_doc": sum(sizes.values()) / built,
                "writer_peak_rss": writer_rss,
                "reader_rss_after_open": reader["rss_open"],
                "reader_peak_rss": reader["rss_peak"],
                "reader_first_search_s": reader["first_search_s"],
                "reader_major_faults_per_query": reader["major_faults_per_query"],
                "default_candidates": reader["default_candidates"],
                "page_cache_bytes": reader["page_cache"],
                "writer_rss_during_reader": reader["writer_rss"],
                "index_bytes": sum(sizes.values()),
                "p50_ms": float(np.percentile(reader["times_ms"], 50)),
                "p95_ms": float(np.percentile(reader["times_ms"], 95)),
                "exact_top10_found": _found(reader["ids"], truth.tolist()),
                "exact_top1_first": float(np.mean(top1)),
                "store_exact_top10_found": _found(reader["ids"], reader["store_exact_ids"]),
                "store_exact_s": reader["store_exact_s"],
                "sweep": _sweep_rows(reader, truth),
            }
            print(row, file=sys.stderr, flush=True)
            rows.append(row)
        if args.keep:
            print(f"kept {path} (queries: {qfile})", file=sys.stderr, flush=True)
    return {"machine": machine(), "muvera": __version__, "token_dtype": args.token_dtype,
            "batch": args.batch, "bulk": args.bulk, "fde": config.to_dict(),
            "ef_construction": args.ef_construction, "token_cells": args.token_cells,
            "fde_dimension": index.encoder.output_dimension, "queries": len(queries),
            "rows": rows}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    gib = 2**30
    lines = [
        f"{describe(result['machine'])}; muvera {result['muvera']}. hnswlib index ("
        + (f"ef_construction {ef}" if (ef := result.get("ef_construction")) else "default options")
        + (f", {cells:,} token cells" if (cells := result.get("token_cells")) else "")
        + f"), FDE R={result['fde']['num_repetitions']} -> {result['fde_dimension']:,} "
        f"dims, token_dtype {result['token_dtype']}, {result['batch']:,} documents per add"
        f"{', one bulk commit per step' if result['bulk'] else ' (a commit each)'}, "
        f"{result['queries']} real queries; exact top-10 by brute force on float16 tokens.",
        "",
        "| documents | docs/s (step / all) | KiB/doc total (tokens + graph + rest) "
        "| writer peak RSS GiB | reader RSS GiB (open / peak) | reader's first search s "
        "| p50 / p95 ms | major faults / query | exact top-10 found | exact top-1 first |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        b = r["bytes_per_doc"]
        first = f"{r['reader_first_search_s']:.2f}" if "reader_first_search_s" in r else "-"
        faults = r.get("reader_major_faults_per_query")
        faults = "-" if faults is None else f"{faults:.0f}"
        lines.append(
            f"| {r['documents']:,} | {r['step_docs_per_s']:.0f} / {r['docs_per_s']:.0f} "
            f"| {r['total_bytes_per_doc'] / 1024:.1f} ({b['tokens'] / 1024:.1f} + "
            f"{b['graph'] / 1024:.1f} + {b['other'] / 1024:.1f}) "
            f"| {r['writer_peak_rss'] / gib:.2f} "
            f"| {r['reader_rss_after_open'] / gib:.2f} / {r['reader_peak_rss'] / gib:.2f} "
            f"| {first} "
            f"| {r['p50_ms']:.1f} / {r['p95_ms']:.1f} "
            f"| {faults} | {_share(r['exact_top10_found'])} | {_share(r['exact_top1_first'])} |"
        )
    for r in result.get("search_again", []):  # kept indexes searched again, writer gone
        b = r["bytes_per_doc"]
        lines.append(
            f"| {r['documents']:,} (fresh reader alone) | - "
            f"| {r['total_bytes_per_doc'] / 1024:.1f} ({b['tokens'] / 1024:.1f} + "
            f"{b['graph'] / 1024:.1f} + {b['other'] / 1024:.1f}) | - "
            f"| {r['rss_open'] / gib:.2f} / {r['rss_peak'] / gib:.2f} "
            f"| {r['first_search_s']:.2f} | {r['p50_ms']:.1f} / {r['p95_ms']:.1f} "
            f"| {r['major_faults_per_query']:.0f} | {_share(r['exact_top10_found'])} "
            f"| {_share(r['exact_top1_first'])} |"
        )
    again = [dict(r, documents=f"{r['documents']:,} (fresh reader)")
             for r in result.get("search_again", [])]  # fmt: skip
    swept = [r for r in [*result["rows"], *again] if r.get("sweep")]
    if swept:
        lines += ["", "Candidates re-ranked (the same reader, the same queries; the last column: "
                  f"the top-10 of the index's own search_exact on the same stored tokens, first "
                  f"{STORE_EXACT_QUERIES} queries):", "",
                  "| documents | candidates | p50 / p95 ms | exact top-10 found "
                  "| exact top-1 first | search_exact top-10 found |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for r in swept:
            default = {"candidates": f"{r.get('default_candidates', 100)} (default)",
                       "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"],
                       **{k: r.get(k) for k in ("exact_top10_found", "exact_top1_first",
                                                "store_exact_top10_found")}}  # fmt: skip
            for c in [default, *r["sweep"]]:
                lines.append(
                    f"| {_count(r['documents'])} | {c['candidates']} "
                    f"| {c['p50_ms']:.1f} / {c['p95_ms']:.1f} "
                    f"| {_share(c['exact_top10_found'])} | {_share(c['exact_top1_first'])} "
                    f"| {_share(c.get('store_exact_top10_found'))} |"
                )
    return "\n".join(lines)


def _count(documents: int | str) -> str:
    return f"{documents:,}" if isinstance(documents, int) else documents


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", default="10000,30000,100000")
    parser.add_argument("--batch", type=int, default=10000, help="documents per add() call")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--token-dtype", default="float16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repetitions", type=int, default=20, help="FDE num_repetitions")
    parser.add_argument("--final-projection", type=int, default=None, help="FDE final dims")
    parser.add_argument("--bulk", action="store_true", help="one bulk commit per step")
    parser.add_argument("--dir", type=Path, help="where the index is built (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the index folder")
    parser.add_argument("--sweep", default="", help="the reader also tries these candidates")
    parser.add_argument("--ef-construction", type=int, help="hnswlib's (default: the store's)")
    parser.add_argument("--token-cells", type=int, help="cells to fit (default: the store's)")


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "--reader":
        counts = [int(c) for c in sys.argv[4].split(",") if c] if len(sys.argv) == 5 else []
        print(json.dumps(read_side(Path(sys.argv[2]), Path(sys.argv[3]), counts)))
    elif len(sys.argv) > 1 and sys.argv[1] == "--search-again":
        search_again(sys.argv[2:])
    else:
        bench_main(__doc__, "scale_text.json", measure, markdown, add_arguments)
