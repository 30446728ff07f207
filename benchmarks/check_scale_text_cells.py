"""Token cells at scale on the text-like corpus: the share of the exact MaxSim top-10 found
and the per-query p50 / p95 of one default hnswlib index (built once, kept with
``--keep``), searched with the FDE alone and with FDE + cells in both of the cells' modes:
ranking the FDE's top ``WIDE x candidates`` (the default beyond ``SCAN_TOKENS`` live
tokens) and scoring every document (the default below). Queries alternate between the
modes, so all see the same machine state.

Usage: ``python benchmarks/check_scale_text_cells.py [--documents 100000]
[--candidates 100,200] [--keep /tmp/scale-index] [--out results.json]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scale_text import ground_truth  # noqa: E402
from machine import describe, machine  # noqa: E402
from scale_corpus import TextLikeCorpus  # noqa: E402

from muvera import FDEConfig, Index  # noqa: E402
from muvera.stores import local  # noqa: E402

STEP = 10_000


def build(path: Path, corpus: TextLikeCorpus, n_docs: int) -> float:
    t0 = time.perf_counter()
    with Index.create(path, FDEConfig(dimension=corpus.dimension)) as index, index.bulk():
        for start in range(0, n_docs, STEP):
            docs = corpus.documents(start, min(n_docs, start + STEP))
            index.add(list(range(start, start + len(docs))), docs)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--candidates", default="100,200")
    parser.add_argument("--keep", type=Path, help="index folder: reused when it exists")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--exact-queries", type=int, default=10, help="queries timed with search_exact"
    )
    args = parser.parse_args()
    corpus = TextLikeCorpus.from_cache()
    queries = corpus.queries(args.queries)
    truth = ground_truth(corpus, args.documents, queries)
    path = args.keep or Path("/tmp") / f"muvera-cells-{args.documents}"
    build_s = None if path.exists() else build(path, corpus, args.documents)
    index = Index.open(path, mode="r")
    if len(index) != args.documents or not index.store.uses_cells:
        raise SystemExit(f"{path} does not hold {args.documents} documents with token cells")
    modes = {"fde": None, "cells (FDE pool)": 0, "cells (every document)": 1 << 62}
    result: dict[str, Any] = {"machine": machine(), "documents": args.documents,
                              "build_s": build_s, "rows": []}  # fmt: skip
    cells = index.store.cells
    for n in [int(c) for c in args.candidates.split(",")]:
        times: dict[str, list[float]] = {m: [] for m in modes}
        found: dict[str, list[float]] = {m: [] for m in modes}
        for q, want in zip(queries, truth, strict=True):
            for mode, scan in modes.items():
                index.store.cells = None if scan is None else cells
                if scan is not None:
                    local.SCAN_TOKENS = scan
                t0 = time.perf_counter()
                ids = index.search([q], k=10, candidates=n).ids[0]
                times[mode].append(1000 * (time.perf_counter() - t0))
                found[mode].append(len(set(ids.tolist()) & set(want.tolist())) / 10)
        index.store.cells = cells
        for mode in modes:
            row = {
                "candidates": n, "first_stage": mode, "found": float(np.mean(found[mode])),
                "p50_ms": float(np.median(times[mode])),
                "p95_ms": float(np.percentile(times[mode], 95)),
            }  # fmt: skip
            result["rows"].append(row)
            print(row, flush=True)
    exact_ms = []
    for q in queries[: args.exact_queries]:  # the compiled brute force, for the ratio
        t0 = time.perf_counter()
        index.search_exact([q], k=10)
        exact_ms.append(1000 * (time.perf_counter() - t0))
    result["exact_p50_ms"] = float(np.median(exact_ms)) if exact_ms else None
    print(f"\n{describe(result['machine'])}; {args.documents:,} text-like documents")
    if exact_ms:
        print(f"search_exact p50 {result['exact_p50_ms']:.0f} ms ({len(exact_ms)} queries)")
    print("| candidates | first stage | exact top-10 found | p50 ms | p95 ms | search_exact "
          "p50 / p50 |")  # fmt: skip
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for r in result["rows"]:
        speedup = f"{result['exact_p50_ms'] / r['p50_ms']:.0f}x" if exact_ms else "-"
        print(f"| {r['candidates']} | {r['first_stage']} | {r['found']:.3f} | "
              f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {speedup} |")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
