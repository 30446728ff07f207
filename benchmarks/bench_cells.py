"""Token cells in the first stage: the default index (FDE half + cells half of the
candidates) against the FDE alone, at each candidate count, in one run.

For each case (``dataset:split:variant``, as in ``bench_quality.py``): two hnswlib indexes
of the same token vectors, one with token cells (the default) and one with
``store_options={"token_cells": False}``; their build time; then, at each candidate count,
nDCG@10 as a fraction of exact MaxSim's, the share of the exact top-10 found, and p50 /
p95 of queries searched one at a time (the two indexes alternate query by query, so both
see the same machine state). Protocol: the candidate split and the default count are
chosen on the tuning cases (``scifact:train``), the others are held out.

``--probe`` searches as beyond ``SCAN_TOKENS`` token rows (``SCAN_TOKENS = 0``): the cells
rank the FDE's pool plus the documents of the probed cells, the mode of large indexes,
whose settings were chosen on the text-like corpus (``check_scale_text_cells.py
--sweep``): here every case is held out for them.

Usage: ``python benchmarks/bench_cells.py [--cases ...] [--sweep 100,200] [--probe]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_quality import TUNED_ON, found, prepare  # noqa: E402
from machine import describe, machine  # noqa: E402
from runner import bench_main  # noqa: E402

from muvera import FDEConfig, Index, __version__  # noqa: E402
from muvera.index.results import CELLS_CANDIDATES, WIDE_CANDIDATES  # noqa: E402
from muvera.stores import local  # noqa: E402

CASES = (
    "scifact:train:orig,scifact:train:aniso3,scifact:train:raw,scifact:test:orig,"
    "scifact:test:aniso3,scifact:test:raw,msmarco-mini:test:orig,msmarco-mini:test:aniso3,"
    "msmarco-mini:test:raw"
)
MODES = {"cells": {}, "fde": {"token_cells": False}}


def _modes(cell_counts: list[int]) -> dict[str, dict[str, Any]]:
    """The indexes compared: the default, one per extra cell count, the FDE alone."""
    extra = {f"cells-{n}": {"token_cells": n} for n in cell_counts}
    return {"cells": {}, **extra, "fde": {"token_cells": False}}


def measure_case(case: str, counts: list[int], modes: dict[str, Any] = MODES) -> dict[str, Any]:
    t = prepare(case)
    queries, ndcg, exact_ndcg = t["queries"], t["ndcg"], t["exact_ndcg"]
    row: dict[str, Any] = {"case": case, "held_out": not case.startswith(TUNED_ON)}
    config = FDEConfig(dimension=t["dimension"])
    with tempfile.TemporaryDirectory() as tmp:
        indexes = {}
        for mode, options in modes.items():
            t0 = time.perf_counter()
            index = Index.create(Path(tmp) / mode, config, store_options=options)
            with index.bulk():
                index.add(t["doc_ids"], t["docs"])
            row[f"{mode}_build_s"] = time.perf_counter() - t0
            indexes[mode] = index
        for n in counts:
            times: dict[str, list[float]] = {mode: [] for mode in modes}
            for q in queries:  # alternate: both modes see the same machine state
                for mode, index in indexes.items():
                    t0 = time.perf_counter()
                    index.search([q], k=10, candidates=n)
                    times[mode].append(1000 * (time.perf_counter() - t0))
            for mode, index in indexes.items():
                result = index.search(queries, k=10, candidates=n)
                row[f"{mode}_{n}"] = {
                    "ndcg_ratio": ndcg(result.ids, result.scores) / exact_ndcg,
                    "found": found(result.ids, t["exact_top10"]),
                    "p50_ms": float(np.median(times[mode])),
                    "p95_ms": float(np.percentile(times[mode], 95)),
                }
        for index in indexes.values():
            index.close()
    print(row, file=sys.stderr, flush=True)
    return row


def measure(args: argparse.Namespace) -> dict[str, Any]:
    counts = [int(x) for x in args.sweep.split(",")]
    cell_counts = [int(x) for x in args.cell_counts.split(",") if x]
    modes = _modes(cell_counts)
    if args.probe:
        local.SCAN_TOKENS = 0
    return {
        "machine": machine(),
        "muvera": __version__,
        "sweep": counts,
        "cell_counts": cell_counts,
        "protocol": (
            f"candidate split and default count ({CELLS_CANDIDATES}) chosen on {TUNED_ON} queries; "
            "every other case held out"
            + (
                "; searched as a large index (SCAN_TOKENS = 0: FDE pool + probed cells, "
                f"settings and that mode's default count ({WIDE_CANDIDATES}) chosen on the "
                "text-like corpus, so every case is held out for them)"
                if args.probe
                else ""
            )
        ),
        "rows": [measure_case(case, counts, modes) for case in args.cases.split(",")],
    }


def markdown(result: dict[str, Any]) -> str:
    counts = result["sweep"]
    lines = [
        f"{describe(result['machine'])}; muvera {result['muvera']}. Protocol: "
        f"{result['protocol']}. hnswlib index, defaults; per candidate count: x exact "
        "MaxSim nDCG@10 / exact top-10 found / p50 ms / p95 ms, with token cells (default"
        + "".join(f"; {n:,} cells" for n in result.get("cell_counts", []))
        + ") and with the FDE alone; build time of each.",
        "",
        "| case | held out | first stage | build s | "
        + " | ".join(f"{n} candidates" for n in counts)
        + f" | p50 / the FDE's p50 at {counts[0]} |",
        "| --- | :-: | --- | ---: |" + " ---: |" * len(counts) + " ---: |",
    ]
    for r in result["rows"]:
        labels = [("cells", "FDE + cells")]
        labels += [(f"cells-{n}", f"FDE + {n:,} cells") for n in result.get("cell_counts", [])]
        for mode, label in [*labels, ("fde", "FDE")]:
            cells = [
                f"{r[f'{mode}_{n}']['ndcg_ratio']:.4f} / {r[f'{mode}_{n}']['found']:.1%} / "
                f"{r[f'{mode}_{n}']['p50_ms']:.2f} / {r[f'{mode}_{n}']['p95_ms']:.2f}"
                for n in counts
            ]
            held = "yes" if r["held_out"] else "tuning"
            base = r[f"fde_{counts[0]}"]["p50_ms"]
            ratios = " / ".join(f"{r[f'{mode}_{n}']['p50_ms'] / base:.2f}x" for n in counts)
            lines.append(
                f"| {r['case']} | {held} | {label} | {r[f'{mode}_build_s']:.1f} | "
                + " | ".join(cells)
                + f" | {ratios} |"
            )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", default=CASES, help="dataset:split:variant,...")
    parser.add_argument("--sweep", default="100,200", help="comma-separated candidate counts")
    parser.add_argument("--probe", action="store_true", help="search as a large index")
    parser.add_argument("--cell-counts", default="", help="also indexes of these cell counts")


if __name__ == "__main__":
    bench_main(__doc__, "cells.json", measure, markdown, add_arguments)
