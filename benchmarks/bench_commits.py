"""Commits of the hnswlib store as the index grows: graph segments against the store
before them (a whole-graph rewrite at every commit), alternately in one run.

"segments" is this checkout (a commit writes the rows it adds as a graph segment, folded
into the main graph when the segments hold ``FOLD_RATIO`` of its rows or number more than
``MAX_SEGMENTS``: ``muvera/stores/hnsw_parts.py``); "before" is the tree of ``--base``
(default 3aec960, the last commit before segments; exported and compiled as
``ab_commits.py`` does), whose writer keeps hnswlib's graph in memory, inserts the new rows
and saves the whole graph file at every commit.

For each size N: N text-like documents (``scale_corpus.py``) in one bulk commit, the folder
copied, then K commits of B new documents, alternating between two worker processes (one
per mode, so that each has its own peak RSS). Per mode: seconds per commit (p50 / max),
bytes it wrote per commit (``write()`` bytes of the process, /proc/self/io ``wchar``:
graph, tokens, codes, state, manifest), documents per second over the K commits, graph
segments at the end, the worker's peak RSS above its RSS once the index was open (the
corpus's token caches are loaded before), then a fresh reader's p50 / p95 per query
(one at a time, 100 queries, after a warm-up pass; two rounds alternating between the
copies, the better p50 kept, with its major page faults per query) and the share of the
"before" tree's top-10 that the segments mode returns.

Usage: ``python benchmarks/bench_commits.py --sizes 10000,50000 --commits 12 --batch 100``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

MODES = ("segments", "before")


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def worker(path: str, mode: str) -> None:
    """Commit the ranges read from stdin ("START STOP") to the index at ``path``; print one
    JSON line per commit."""
    from scale_corpus import TextLikeCorpus

    from muvera import Index

    del mode
    corpus = TextLikeCorpus.from_cache()
    with Index.open(path) as index:
        print(json.dumps({"rss": memory("VmRSS")}), flush=True)
        for line in sys.stdin:
            start, stop = (int(x) for x in line.split())
            docs = corpus.documents(start, stop)
            written, t0 = _wchar(), time.perf_counter()
            index.add(list(range(start, stop)), docs)  # one commit
            seconds = time.perf_counter() - t0
            print(json.dumps({
                "seconds": seconds, "written": _wchar() - written,
                "segments": getattr(index.store, "segments", 0), "peak_rss": memory("VmHWM"),
            }), flush=True)  # fmt: skip


def _start(path: Path, tree: Path | None) -> subprocess.Popen[str]:
    """A worker on ``path`` (running the muvera of ``tree`` when given)."""
    env = None if tree is None else dict(os.environ, PYTHONPATH=str(tree))
    command = [sys.executable, __file__, "--worker", str(path), path.name]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip


def _latency(path: Path, queries: list[Any]) -> dict[str, Any]:
    """A fresh reader of ``path`` in this process: p50 / p95 ms per query (one at a time,
    after a warm-up pass), major page faults per query, and the top-10 ids."""
    import resource

    from muvera import Index

    index = Index.open(path, mode="r")
    ids = index.search(queries, k=10).ids  # warm-up pass, and the ids compared
    times, faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    for q in queries:
        t0 = time.perf_counter()
        index.search([q], k=10)
        times.append(1000 * (time.perf_counter() - t0))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)),
            "faults": faults / len(queries), "ids": ids}  # fmt: skip


def _readers(tmp: Path, queries: list[Any], rounds: int = 2) -> dict[str, dict[str, Any]]:
    """Each copy's reader, alternating (order flipped each round: the writers' files
    compete for the page cache), the round with the lower p50 kept."""
    best: dict[str, dict[str, Any]] = {}
    for r in range(rounds):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            got = _latency(tmp / mode, queries)
            if mode not in best or got["p50"] < best[mode]["p50"]:
                best[mode] = got
    return best


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from ab_commits import export
    from scale_corpus import TextLikeCorpus

    from muvera import FDEConfig, Index

    corpus = TextLikeCorpus.from_cache()
    queries = corpus.queries(args.queries)
    tree = export(args.base, Path(tempfile.mkdtemp(dir=args.dir)) / "base")
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            base = Path(tmp) / "segments"
            config = FDEConfig(dimension=corpus.dimension,
                               final_projection_dimension=args.final_projection)  # fmt: skip
            with Index.create(base, config) as index, index.bulk():
                for start in range(0, n, 10_000):
                    stop = min(start + 10_000, n)
                    index.add(list(range(start, stop)), corpus.documents(start, stop))
            shutil.copytree(base, Path(tmp) / "before")
            procs = {mode: _start(Path(tmp) / mode, tree if mode == "before" else None)
                     for mode in MODES}  # fmt: skip
            ready = {}
            for mode, proc in procs.items():
                assert proc.stdout is not None
                ready[mode] = json.loads(proc.stdout.readline())["rss"]
            seen: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
            for i in range(args.commits):
                start = n + i * args.batch
                order = MODES if i % 2 == 0 else MODES[::-1]
                for mode in order:
                    proc = procs[mode]
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(f"{start} {start + args.batch}\n")
                    proc.stdin.flush()
                    seen[mode].append(json.loads(proc.stdout.readline()))
            for proc in procs.values():
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait()
            found = _readers(Path(tmp), queries)
            shared = np.mean([len(set(a) & set(b)) / 10 for a, b in
                              zip(found["segments"]["ids"].tolist(),
                                  found["before"]["ids"].tolist(), strict=True)])  # fmt: skip
            for mode in MODES:
                commits = seen[mode]
                seconds = [c["seconds"] for c in commits]
                rows.append({
                    "documents": n, "mode": mode, "batch": args.batch, "commits": args.commits,
                    "commit_p50_s": float(np.median(seconds)), "commit_max_s": max(seconds),
                    "written_per_commit": float(np.mean([c["written"] for c in commits])),
                    "docs_per_s": args.batch * len(seconds) / sum(seconds),
                    "segments": commits[-1]["segments"],
                    "segments_max": max(c["segments"] for c in commits),
                    "writer_peak_rss": commits[-1]["peak_rss"],
                    "writer_rss_at_open": ready[mode],
                    "p50_ms": found[mode]["p50"], "p95_ms": found[mode]["p95"],
                    "reader_major_faults_per_query": found[mode]["faults"],
                    "top10_shared_with_before": float(shared),
                })  # fmt: skip
    shutil.rmtree(tree.parent, ignore_errors=True)
    return {"machine": machine(), "queries": len(queries), "base": args.base,
            "final_projection": args.final_projection, "rows": rows}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    lines = [
        describe(result["machine"]),
        "",
        "| documents | commits | commit p50 / max s | MiB written per commit | docs/s | "
        "segments (end / max) | writer peak RSS above its open GiB | reader p50 / p95 ms | "
        "reader major faults / query | top-10 shared |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        grown = (r["writer_peak_rss"] - r["writer_rss_at_open"]) / 2**30
        faults = r.get("reader_major_faults_per_query")
        faults = "-" if faults is None else f"{faults:.1f}"
        lines.append(
            f"| {r['documents']:,} | {r['mode']}, {r['commits']} x {r['batch']} | "
            f"{r['commit_p50_s']:.2f} / {r['commit_max_s']:.2f} | "
            f"{r['written_per_commit'] / 2**20:.1f} | {r['docs_per_s']:.0f} | "
            f"{r['segments']} / {r['segments_max']} | {grown:.2f} | "
            f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f} | {faults} | "
            f"{r['top10_shared_with_before']:.3f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--commits", type=int, default=12)
    parser.add_argument("--batch", type=int, default=100, help="documents per commit")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--final-projection", type=int, default=None)
    parser.add_argument("--dir", default=None, help="where the indexes are built")
    parser.add_argument("--base", default="3aec960", help="the tree before segments")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        bench_main(__doc__, "commits.json", measure, markdown, add_arguments)
