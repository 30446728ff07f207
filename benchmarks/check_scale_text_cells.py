"""Token cells at scale on the text-like corpus: the share of the exact MaxSim top-10 found
and the per-query p50 / p95 of one default hnswlib index (built once, kept with
``--keep``), searched with the FDE alone and with FDE + cells in each of the cells' modes
beyond ``SCAN_TOKENS`` token rows: the cells rank the FDE's top ``WIDE x candidates``
plus the best documents of the query's probed cells ("FDE pool + probe", the default),
the FDE's top 4 x candidates alone (the default before probing), and, for the ceiling,
every document. Queries alternate between the modes, so
all see the same machine state.

``--sweep`` is the tuning run of ``FDE_PART``, ``WIDE``, ``N_PROBE`` and ``PROBE_DOCS``:
on the first half of the queries (the tuning half; the second half is held out, and so
are the real corpora of ``bench_cells.py --probe`` and larger indexes) the default is the
cheapest setting whose share found is within ``SWEEP_TOLERANCE`` of the best setting's,
on this index and on every index of ``--joint`` (results files of earlier sweeps);
cheapest = the fewest documents ranked by cells (FDE pool + documents handed on), then
the smallest FDE pool, then the fewest probed cells. ``--truth-file`` replaces the
float16 brute force by another top-10 per query (``.npy``, e.g. the index's own
``search_exact`` when its tokens are quantized: what its re-rank can find; written by the
run that finds the file absent). (The first
protocol always kept the FDE's top half and took as bar scoring every document with that
half kept, which is no ceiling: see docs/performance.md.)

Usage: ``python benchmarks/check_scale_text_cells.py [--documents 100000]
[--candidates 100,200] [--keep /tmp/scale-index] [--sweep] [--no-ceiling]
[--out results.json]``; ``--markdown FILE`` prints the table of a results file.
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
SWEEP_PARTS = (2, 4, 10)
SWEEP_PROBES = (1, 2, 4)
SWEEP_DOCS = (4, 8, 16, 32, 64)
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


def _name(part: int, wide: int, n_probe: int, docs: int) -> str:
    return f"FDE 1/{part}, wide {wide}, probe {n_probe} x {docs}"


def _set(setting: tuple[int, ...]) -> None:
    """The wide mode's module settings (as searches read them)."""
    (local.SCAN_TOKENS, cell_file.PROBE_DOCS, cell_file.N_PROBE, local.WIDE,
     local.FDE_PART) = setting  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    """The table of a results file (``--markdown``)."""
    dims = result.get("fde_dimension")
    lines = [
        f"{describe(result['machine'])}; {result['documents']:,} text-like documents, "
        + (f"FDE {dims:,} dims, " if dims else "")
        + f"{result['bytes'] / result['documents'] / 1024:.1f} KiB/doc"
        + (f", built in {result['build_s']:.0f} s" if result.get("build_s") else "")
        + f"; first search (builds the cells' postings) {result['first_search_s']:.2f} s"
        + (f", {result['postings']:,} (cell, document) postings" if "postings" in result else "")
        + (f"; search_exact p50 {ms:.0f} ms" if (ms := result.get("exact_p50_ms")) else "")
        + ("; truth: the index's own search_exact" if result.get("truth_file") else "")
        + ".",
        "",
        "| candidates | first stage | exact top-10 found (held-out half) | p50 ms | p95 ms | "
        "search_exact p50 / p50 |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        ms = result.get("exact_p50_ms")
        speedup = f"{ms / r['p50_ms']:.0f}x" if ms else "-"
        held = r["found_held_out"]
        lines.append(
            f"| {r['candidates']} | {r['first_stage']} | {r['found']:.3f} "
            f"({'-' if held is None else f'{held:.3f}'}) | "
            f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {speedup} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--candidates", default="100,200")
    parser.add_argument("--keep", type=Path, help="index folder: reused when it exists")
    parser.add_argument("--sweep", action="store_true", help="tune the wide mode's settings")
    parser.add_argument(
        "--projection", type=int, help="build with FDEConfig(final_projection_dimension=N)"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--truth-file", type=Path, help="top-10 ids per query (.npy)")
    parser.add_argument("--markdown", type=Path, help="print the table of a results file")
    parser.add_argument("--joint", default="", help="earlier --sweep results, comma-separated")
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip scoring every document (10^6: slow)"
    )
    parser.add_argument(
        "--exact-queries", type=int, default=10, help="queries timed with search_exact"
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    corpus = TextLikeCorpus.from_cache()
    queries = corpus.queries(args.queries)
    truth = ground_truth(corpus, args.documents, queries)
    path = args.keep or Path("/tmp") / f"muvera-cells-{args.documents}"
    build_s = None if path.exists() else build(path, corpus, args.documents, args.projection)
    if args.truth_file and not args.truth_file.exists():  # the index's own exact top-10
        with Index.open(path, mode="r") as own:
            ids = [own.search_exact([q], k=10).ids[0] for q in queries]
        np.save(args.truth_file, np.array(ids, dtype=np.int64))
    if args.truth_file:
        truth = np.load(args.truth_file)
        queries = queries[: len(truth)]
    index = Index.open(path, mode="r")
    if len(index) != args.documents or not index.store.uses_cells:
        raise SystemExit(f"{path} does not hold {args.documents} documents with token cells")
    default = (
        local.SCAN_TOKENS, cell_file.PROBE_DOCS, cell_file.N_PROBE, local.WIDE, local.FDE_PART
    )  # fmt: skip
    modes = {  # (SCAN_TOKENS, PROBE_DOCS, N_PROBE, WIDE, FDE_PART); None: FDE alone
        "fde": None,
        "cells (FDE pool + probe, the first default)": (0, 4, 2, 1, 2),
        "cells (FDE pool + probe, tuned at 100k alone)": (0, 16, 2, 4, 10),
        "cells (FDE pool + probe)": (0, *default[1:]),
        "cells (every document)": (EVERYTHING, *default[1:]),
    }
    if args.no_ceiling:
        del modes["cells (every document)"]
    result: dict[str, Any] = {
        "machine": machine(), "documents": args.documents, "build_s": build_s,
        "fde": index.encoder.config.to_dict(), "bytes": dir_bytes(path), "rows": [],
        "truth_file": None if args.truth_file is None else args.truth_file.name,
    }  # fmt: skip
    t0 = time.perf_counter()
    index.search([queries[0]], k=10)  # the postings are built by the first search
    result["first_search_s"] = time.perf_counter() - t0
    if args.sweep:
        half = len(queries) // 2
        grid = [
            (part, wide, n_probe, docs) for part in SWEEP_PARTS for wide in SWEEP_WIDE
            for n_probe in SWEEP_PROBES for docs in SWEEP_DOCS
        ]  # fmt: skip
        for part, wide, n_probe, docs in grid:
            modes[_name(part, wide, n_probe, docs)] = (0, docs, n_probe, wide, part)
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
                    _set(setting)
                t0 = time.perf_counter()
                ids = index.search([q], k=10, candidates=n).ids[0]
                times[mode].append(1000 * (time.perf_counter() - t0))
                found[mode].append(len(set(ids.tolist()) & set(want.tolist())) / 10)
        index.store.cells = cells
        _set(default)
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
            shares = [{m: float(np.mean(f)) for m, f in found.items()}]
            for other in filter(None, args.joint.split(",")):
                rows = json.loads(Path(other).read_text())["rows"]
                shares.append({r["first_stage"]: r["found"] for r in rows if r["candidates"] == n})
            bests = [max(share[_name(*g)] for g in grid) for share in shares]
            good = [  # cost: documents ranked by cells, FDE pool, probed cells
                (wide + docs, wide, n_probe, part, docs) for part, wide, n_probe, docs in grid
                if all(share[_name(part, wide, n_probe, docs)] >= b - SWEEP_TOLERANCE
                       for share, b in zip(shares, bests, strict=True))
            ]  # fmt: skip
            best = bests[0]
            pick = min(good)
            chosen = {"FDE_PART": pick[3], "WIDE": pick[1], "N_PROBE": pick[2],
                      "PROBE_DOCS": pick[4]}  # fmt: skip
            result["sweep"][str(n)] = {"best": best, "pick": chosen}
            print(
                f"sweep at {n} candidates: the best setting finds {best:.3f}; cheapest "
                f"within {SWEEP_TOLERANCE}: {chosen}"
            )
    exact_ms = []
    for q in queries[: args.exact_queries]:  # the compiled brute force, for the ratio
        t0 = time.perf_counter()
        index.search_exact([q], k=10)
        exact_ms.append(1000 * (time.perf_counter() - t0))
    result["exact_p50_ms"] = float(np.median(exact_ms)) if exact_ms else None
    result["fde_dimension"] = index.encoder.output_dimension
    lists = cells.postings(index.store.offsets, index.store.lengths, index.store._live)
    result["postings"] = int(sum(p.labels.size for p in lists))
    print()
    print(markdown(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
