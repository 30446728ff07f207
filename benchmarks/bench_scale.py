"""Cost curve of the default index with corpus size: synthetic 128-dim multi-vectors.

Documents are clouds of 60-180 unit tokens around a shared vocabulary of directions;
each query is 24 noisy tokens of one planted document. The corpus is added in steps
(10k, 30k, 100k documents by default) to one hnswlib index, and after each step the
script records the cumulative build time, the index size on disk, the process's peak
memory, per-query latency (p50/p95) and how often the planted document comes first. For
the first ``--exact-queries`` queries it also runs brute-force exact MaxSim
(``Index.search_exact``), which separates the task's own difficulty (does exact MaxSim put
the planted document first?) from the two-stage search's losses (does it return exact
MaxSim's top-1?).
Prints a table and writes ``benchmarks/results/scale.json``.

Usage: ``python benchmarks/bench_scale.py [--steps 10000,30000,100000]``
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from muvera import FDEConfig, Index, __version__  # noqa: E402

DIM = 128


class Corpus:
    """Deterministic synthetic documents, generated on demand in float16."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        v = rng.standard_normal((8192, DIM)).astype(np.float32)
        self.vocabulary = v / np.linalg.norm(v, axis=1, keepdims=True)
        self.seed = seed

    def documents(self, start: int, stop: int) -> list[np.ndarray]:
        """Documents ``start..stop``; call with one document at a time to re-derive any."""
        rng = np.random.default_rng([self.seed, start])
        out = []
        for n in rng.integers(60, 181, stop - start):
            x = self.vocabulary[rng.integers(0, 8192, n)] + 0.5 / np.sqrt(
                DIM
            ) * rng.standard_normal((n, DIM))
            out.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16))
        return out

    def queries(self, n_docs: int, n: int) -> tuple[list[np.ndarray], np.ndarray]:
        rng = np.random.default_rng([self.seed, 10**9])
        targets = rng.choice(n_docs, n, replace=False)
        queries = []
        for t in targets:
            doc = self.documents(int(t), int(t) + 1)[0].astype(np.float32)  # the planted document
            picked = doc[rng.choice(len(doc), 24, replace=False)]
            q = picked + 0.9 / np.sqrt(DIM) * rng.standard_normal(picked.shape)
            queries.append((q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32))
        return queries, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="10000,30000,100000")
    parser.add_argument("--batch", type=int, default=10000, help="documents per add() call")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=100, help="FDE candidates re-ranked")
    parser.add_argument("--exact-queries", type=int, default=20)
    parser.add_argument(
        "--ef", default="", help="also query with these hnswlib ef values (comma-separated)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    parser.add_argument(
        "--markdown", type=Path, metavar="JSON", help="print the table of a results file"
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    steps = [int(s) for s in args.steps.split(",")]
    corpus = Corpus()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        index = Index.create(Path(tmp) / "ix", FDEConfig(dimension=DIM))
        built = 0
        build_seconds = 0.0
        for step in steps:
            while built < step:
                stop = min(step, built + args.batch)
                # documents are generated one at a time (so that a query can re-derive its
                # planted document) and added in batches
                docs = [corpus.documents(i, i + 1)[0] for i in range(built, stop)]
                t0 = time.perf_counter()
                index.add(list(range(built, stop)), docs)
                build_seconds += time.perf_counter() - t0
                built = stop
                print(f"added {built}", file=sys.stderr)
            queries, targets = corpus.queries(built, args.queries)
            latencies, hits, top1 = [], 0, []
            for q, t in zip(queries, targets, strict=True):
                t0 = time.perf_counter()
                result = index.search([q], k=10, candidates=args.candidates)
                latencies.append(time.perf_counter() - t0)
                hits += int(result.ids[0, 0] == t)
                top1.append(int(result.ids[0, 0]))
            n_exact = min(args.exact_queries, len(queries))
            t0 = time.perf_counter()
            exact = index.search_exact(queries[:n_exact], k=1)
            exact_seconds = (time.perf_counter() - t0) / n_exact
            exact_top1 = exact.ids[:, 0]
            ms = 1000 * np.asarray(latencies)
            sweep, default_ef = [], index.store.ef
            for ef in [int(e) for e in args.ef.split(",") if e]:
                index.store.set_ef(ef)
                lat, found, same = [], 0, 0
                for i, (q, t) in enumerate(zip(queries, targets, strict=True)):
                    t0 = time.perf_counter()
                    top = int(index.search([q], k=10, candidates=args.candidates).ids[0, 0])
                    lat.append(time.perf_counter() - t0)
                    found += int(top == t)
                    same += int(i < n_exact and top == exact_top1[i])
                sweep.append(
                    {
                        "ef": ef,
                        "p50_ms": float(np.percentile(1000 * np.asarray(lat), 50)),
                        "planted_top1": found / len(queries),
                        "matches_exact_top1": same / n_exact,
                    }
                )
                print(sweep[-1], file=sys.stderr)
            index.store.set_ef(default_ef)
            disk = sum(p.stat().st_size for p in (Path(tmp) / "ix").iterdir() if p.is_file())
            rows.append(
                {
                    "documents": built,
                    "build_seconds": build_seconds,
                    "docs_per_second": built / build_seconds,
                    "disk_bytes": disk,
                    "bytes_per_document": disk / built,
                    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                    "p50_ms": float(np.percentile(ms, 50)),
                    "p95_ms": float(np.percentile(ms, 95)),
                    "planted_top1": hits / len(queries),
                    "exact_queries": n_exact,
                    "exact_planted_top1": float(np.mean(exact_top1 == targets[:n_exact])),
                    "two_stage_matches_exact_top1": float(
                        np.mean(exact_top1 == np.array(top1[:n_exact]))
                    ),
                    "exact_seconds_per_query": exact_seconds,
                    "ef_sweep": sweep,
                }
            )
            print(rows[-1], file=sys.stderr)
        index.close()
    print(markdown({"rows": rows}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "muvera_version": __version__,
                "config": "default",
                "candidates": args.candidates,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")
    refresh_docs(args.out)  # the docs/ tables built from this file


def markdown(result: dict) -> str:
    lines = [
        "| documents | build (s, cumulative) | docs/s | disk / doc | peak RSS | p50 ms | p95 ms "
        "| planted doc first | exact MaxSim: planted first | two-stage top-1 = exact top-1 "
        "| exact s / query |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['documents']:,} | {r['build_seconds']:.0f} | {r['docs_per_second']:.0f} "
            f"| {r['bytes_per_document'] / 1024:.0f} KiB | {r['peak_rss_bytes'] / 2**30:.1f} GiB "
            f"| {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['planted_top1']:.0%} "
            f"| {r['exact_planted_top1']:.0%} | {r['two_stage_matches_exact_top1']:.0%} "
            f"| {r['exact_seconds_per_query']:.2f} |"
        )
    sweeps = [(r["documents"], e) for r in result["rows"] for e in r.get("ef_sweep", [])]
    if sweeps:
        lines += [
            "",
            "| documents | hnswlib ef | p50 ms | planted doc first "
            "| two-stage top-1 = exact top-1 |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for n, e in sweeps:
            lines.append(
                f"| {n:,} | {e['ef']} | {e['p50_ms']:.1f} | {e['planted_top1']:.0%} "
                f"| {e['matches_exact_top1']:.0%} |"
            )
    return "\n".join(lines)


def refresh_docs(results_file: Path) -> None:
    """Re-render the docs/ tables built from ``results_file`` (benchmarks/render_docs.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from render_docs import refresh

    refresh(results_file)


if __name__ == "__main__":
    main()
