"""Token cells at scale on the text-like corpus: the share of the exact MaxSim top-10 found
and the per-query p50 / p95 of one default hnswlib index (built once, kept with
``--keep``), searched with the FDE alone and with FDE + cells in each of the cells' modes
beyond ``SCAN_TOKENS`` token rows: the cells rank the FDE's top ``WIDE x candidates``
plus the best documents of the query's probed cells ("FDE pool + probe", the default),
the FDE's top 4 x candidates alone (the default before probing), and, for the ceiling,
every document. Queries alternate between the modes, so
all see the same machine state.

``--sweep`` is the tuning run of ``WIDE``, ``N_PROBE`` and ``PROBE_DOCS``: on the first
half of the queries (the tuning half; the second half is held out, and so are the real
corpora of ``bench_cells.py --probe``) the default is the cheapest setting whose share
found is within ``SWEEP_TOLERANCE`` of scoring every document; cheapest = the smallest
FDE pool (the graph walk is the largest cost), then the fewest probed cells x documents
handed on.

Usage: ``python benchmarks/check_scale_text_cells.py [--documents 100000]
[--candidates 100,200] [--keep /tmp/scale-index] [--sweep] [--no-ceiling]
[--out results.json]``
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
from machine import describe, dir_bytes, machine  # noqa: E402
from scale_corpus import TextLikeCorpus  # noqa: E402

from muvera import FDEConfig, Index  # noqa: E402
from muvera.stores import cell_file, local  # noqa: E402

STEP = 10_000
SWEEP_PROBES = (1, 2, 4, 8)
SWEEP_DOCS = (2, 4, 8, 16)
SWEEP_WIDE = (1, 2, 4)
SWEEP_TOLERANCE = 0.01
EVERYTHING = 1 << 62


def build(path: Path, corpus: TextLikeCorpus, n_docs: int, projection: int | None) -> float:
    t0 = time.perf_counter()
    config = FDEConfig(dimension=corpus.dimension, final_projection_dimension=projection)
    with Index.create(path, config) as index, index.bulk():
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
    parser.add_argument("--sweep", action="store_true", help="tune N_PROBE x PROBE_DOCS")
    parser.add_argument(
        "--projection", type=int, help="build with FDEConfig(final_projection_dimension=N)"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip scoring every document (10^6: slow)"
    )
    parser.add_argument(
        "--exact-queries", type=int, default=10, help="queries timed with search_exact"
    )
    args = parser.parse_args()
    corpus = TextLikeCorpus.from_cache()
    queries = corpus.queries(args.queries)
    truth = ground_truth(corpus, args.documents, queries)
    path = args.keep or Path("/tmp") / f"muvera-cells-{args.documents}"
    build_s = None if path.exists() else build(path, corpus, args.documents, args.projection)
    index = Index.open(path, mode="r")
    if len(index) != args.documents or not index.store.uses_cells:
        raise SystemExit(f"{path} does not hold {args.documents} documents with token cells")
    default = (local.SCAN_TOKENS, cell_file.PROBE_DOCS, cell_file.N_PROBE, local.WIDE)
    modes = {  # (SCAN_TOKENS, PROBE_DOCS, N_PROBE, WIDE); None: FDE alone
        "fde": None,
        "cells (FDE top 4 x, the previous default)": (0, 0, default[2], 4),
        "cells (FDE pool + probe)": (0, *default[1:]),
        "cells (every document)": (EVERYTHING, *default[1:]),
    }
    if args.no_ceiling:
        del modes["cells (every document)"]
    result: dict[str, Any] = {
        "machine": machine(), "documents": args.documents, "build_s": build_s,
        "fde": index.encoder.config.to_dict(), "bytes": dir_bytes(path), "rows": [],
    }  # fmt: skip
    t0 = time.perf_counter()
    index.search([queries[0]], k=10)  # the postings are built by the first search
    result["first_search_s"] = time.perf_counter() - t0
    if args.sweep:
        half = len(queries) // 2
        for wide in SWEEP_WIDE:
            for n_probe in SWEEP_PROBES:
                for docs in SWEEP_DOCS:
                    modes[f"wide {wide}, probe {n_probe} x {docs}"] = (0, docs, n_probe, wide)
        modes["cells (every document)"] = (EVERYTHING, *default[1:])
        queries, truth = queries[:half], truth[:half]
        result["sweep"] = {"queries": half, "of": args.queries, "tolerance": SWEEP_TOLERANCE}
    cells = index.store.cells
    for n in [int(c) for c in args.candidates.split(",")]:
        times: dict[str, list[float]] = {m: [] for m in modes}
        found: dict[str, list[float]] = {m: [] for m in modes}
        for q, want in zip(queries, truth, strict=True):
            for mode, setting in modes.items():
                index.store.cells = None if setting is None else cells
                if setting is not None:
                    local.SCAN_TOKENS, cell_file.PROBE_DOCS, cell_file.N_PROBE, local.WIDE = setting
                t0 = time.perf_counter()
                ids = index.search([q], k=10, candidates=n).ids[0]
                times[mode].append(1000 * (time.perf_counter() - t0))
                found[mode].append(len(set(ids.tolist()) & set(want.tolist())) / 10)
        index.store.cells = cells
        local.SCAN_TOKENS, cell_file.PROBE_DOCS, cell_file.N_PROBE, local.WIDE = default
        for mode in modes:
            row = {
                "candidates": n, "first_stage": mode, "found": float(np.mean(found[mode])),
                # the half of the queries that --sweep does not tune on
                "found_held_out": None if args.sweep
                else float(np.mean(found[mode][len(queries) // 2 :])),
                "p50_ms": float(np.median(times[mode])),
                "p95_ms": float(np.percentile(times[mode], 95)),
            }  # fmt: skip
            result["rows"].append(row)
            print(row, flush=True)
        if args.sweep:
            ceiling = float(np.mean(found["cells (every document)"]))
            good = [
                (wide, n_probe * docs, n_probe, docs) for wide in SWEEP_WIDE
                for n_probe in SWEEP_PROBES for docs in SWEEP_DOCS
                if np.mean(found[f"wide {wide}, probe {n_probe} x {docs}"])
                >= ceiling - SWEEP_TOLERANCE
            ]  # fmt: skip
            pick = min(good) if good else None
            chosen = None if pick is None else {"WIDE": pick[0], "N_PROBE": pick[2],
                                                "PROBE_DOCS": pick[3]}  # fmt: skip
            result["sweep"][str(n)] = {"every_document": ceiling, "pick": chosen}
            print(
                f"sweep at {n} candidates: every document finds {ceiling:.3f}; cheapest "
                f"within {SWEEP_TOLERANCE}: {chosen}"
            )
    exact_ms = []
    for q in queries[: args.exact_queries]:  # the compiled brute force, for the ratio
        t0 = time.perf_counter()
        index.search_exact([q], k=10)
        exact_ms.append(1000 * (time.perf_counter() - t0))
    result["exact_p50_ms"] = float(np.median(exact_ms)) if exact_ms else None
    print(f"\n{describe(result['machine'])}; {args.documents:,} text-like documents, FDE "
          f"{index.encoder.output_dimension:,} dims, {result['bytes'] / args.documents / 1024:.1f} "
          f"KiB/doc" + (f", built in {build_s:.0f} s" if build_s else ""))  # fmt: skip
    lists = cells.postings(index.store.offsets, index.store.lengths, index.store._live)
    result["postings"] = int(sum(p.labels.size for p in lists))
    print(f"first search (builds the cells' postings) {result['first_search_s']:.2f} s; "
          f"postings: {result['postings']:,} (cell, document) pairs")  # fmt: skip
    if exact_ms:
        print(f"search_exact p50 {result['exact_p50_ms']:.0f} ms ({len(exact_ms)} queries)")
    print("| candidates | first stage | exact top-10 found (held-out half) | p50 ms | p95 ms | "
          "search_exact p50 / p50 |")  # fmt: skip
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for r in result["rows"]:
        speedup = f"{result['exact_p50_ms'] / r['p50_ms']:.0f}x" if exact_ms else "-"
        print(f"| {r['candidates']} | {r['first_stage']} | {r['found']:.3f} "
              f"({r['found_held_out'] or 0:.3f}) | "
              f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {speedup} |")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
