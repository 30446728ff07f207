"""What each search-side helper of the wide mode is worth, in one process: the same index
and queries searched with this checkout's settings and with one helper taken away at a
time, settings alternating query by query.

Settings:

* ``default``: this checkout.
* ``tables in place``: each query's cell table computed when its cells are needed, not on
  a worker thread while the FDE graph is walked (``TokenCells.start_tables``).
* ``fresh probe arrays``: the probe's score / stamp / touched arrays (16 bytes a document)
  allocated and zeroed per query instead of reused.
* ``numpy cell top``: the probed cells picked by numpy's argmax passes over a transposed
  copy of the table instead of the ``muvera_cell_top`` kernel.

The index: ``--index DIR`` (a kept one, e.g. ``bench_scale_text.py --keep``'s 10^6
documents; opened read-only) or a text-like corpus of ``--documents N`` built in a
temporary folder (the default index). Either is searched as a large index (wide mode: the
FDE's pool plus probed cells); a small one is forced into it (``SCAN_TOKENS = 0``, as
``bench_cells.py --probe`` does). Real queries of the shared model (``scale_corpus.py``).

Per setting: p50 / p95 over ``--rounds`` rounds (after one warm-up round of the default),
p50 x default's, and the share of queries whose top 10 (ids and scores) equals
default's. Only ratios within one run mean anything on a shared machine.

Usage: ``python benchmarks/bench_wide_ab.py --index DIR --out
benchmarks/results/wide_ab_1m.json`` or ``--documents 50000``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, machine  # noqa: E402
from runner import bench_main  # noqa: E402
from scale_corpus import TextLikeCorpus  # noqa: E402

from muvera import FDEConfig, Index, __version__, postings  # noqa: E402
from muvera.stores import cell_file, local  # noqa: E402

BATCH = 10_000


def _fresh_scratch(self: Any, n_docs: int) -> tuple[np.ndarray, ...]:
    self._spare.clear()  # the arrays given back after each search are dropped, not kept
    return np.zeros(n_docs, np.float32), np.zeros(n_docs, np.int32), np.empty(n_docs, np.int64)


def _numpy_top(orig: Callable[..., Any]) -> Callable[..., Any]:
    return lambda table, n_tokens, n_probe, kernel: orig(table, n_tokens, n_probe, None)


@contextmanager
def setting(name: str) -> Iterator[None]:
    """This checkout's code with one helper replaced while the block runs."""
    saved = (cell_file.TokenCells.start_tables, cell_file.TokenCells._scratch,
             postings._probed_cells)  # fmt: skip
    if name == "tables in place":
        cell_file.TokenCells.start_tables = lambda self, queries: None
    elif name == "fresh probe arrays":
        cell_file.TokenCells._scratch = _fresh_scratch
    elif name == "numpy cell top":
        postings._probed_cells = _numpy_top(saved[2])
    try:
        yield
    finally:
        (cell_file.TokenCells.start_tables, cell_file.TokenCells._scratch,
         postings._probed_cells) = saved  # fmt: skip


SETTINGS = ("default", "tables in place", "fresh probe arrays", "numpy cell top")


def build(folder: Path, corpus: TextLikeCorpus, n_docs: int) -> float:
    t0 = time.perf_counter()
    with Index.create(folder, FDEConfig(dimension=corpus.dimension)) as index, index.bulk():
        for start in range(0, n_docs, BATCH):
            docs = corpus.documents(start, min(n_docs, start + BATCH))
            index.add(list(range(start, start + len(docs))), docs)
    return time.perf_counter() - t0


def run(path: Path, queries: list[np.ndarray], rounds: int, candidates: int) -> dict[str, Any]:
    saved_scan = local.SCAN_TOKENS
    local.SCAN_TOKENS = 0  # the wide mode, whatever the index's size
    try:
        with Index.open(path, mode="r") as index:
            times: dict[str, list[float]] = {name: [] for name in SETTINGS}
            same: dict[str, list[bool]] = {name: [] for name in SETTINGS}
            first = [index.search([q], k=10, candidates=candidates) for q in queries]
            for r in range(rounds):
                order = SETTINGS[r % len(SETTINGS) :] + SETTINGS[: r % len(SETTINGS)]
                for qi, q in enumerate(queries):
                    for name in order:
                        with setting(name):
                            t0 = time.perf_counter()
                            got = index.search([q], k=10, candidates=candidates)
                            times[name].append(1000 * (time.perf_counter() - t0))
                        same[name].append(
                            bool(
                                np.array_equal(got.ids, first[qi].ids)
                                and np.array_equal(got.scores, first[qi].scores)
                            )
                        )
            n_docs = len(index)
    finally:
        local.SCAN_TOKENS = saved_scan
    rows = []
    for name in SETTINGS:
        t = np.asarray(times[name])
        rows.append({"setting": name, "p50_ms": float(np.percentile(t, 50)),
                     "p95_ms": float(np.percentile(t, 95)),
                     "same_top10": float(np.mean(same[name]))})  # fmt: skip
    return {"documents": n_docs, "rows": rows}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    corpus = TextLikeCorpus.from_cache(seed=args.seed)
    queries = corpus.queries(args.queries)
    result: dict[str, Any] = {"machine": machine(), "muvera": __version__,
                              "queries": len(queries), "rounds": args.rounds,
                              "candidates": args.candidates}  # fmt: skip
    if args.index is not None:
        result["index"] = "a kept index"
        result.update(run(args.index, queries, args.rounds, args.candidates))
        return result
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp) / "ix"
        result["build_s"] = build(folder, corpus, args.documents)
        result["index"] = "a default index built here"
        result.update(run(folder, queries, args.rounds, args.candidates))
    return result


def markdown(result: dict[str, Any]) -> str:
    base = result["rows"][0]["p50_ms"]
    lines = [
        f"{describe(result['machine'])}; muvera {result['muvera']}. {result['documents']:,} "
        f"text-like documents ({result['index']}), searched in wide mode; "
        f"{result['queries']} queries x {result['rounds']} rounds, settings alternating "
        f"query by query; {result['candidates']} candidates, k = 10.",
        "",
        "| setting | p50 / p95 ms | p50 x default | same top-10 as default |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['setting']} | {r['p50_ms']:.1f} / {r['p95_ms']:.1f} "
                     f"| {r['p50_ms'] / base:.2f} | {r['same_top10']:.0%} |")  # fmt: skip
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", type=Path, help="a kept index (default: build one)")
    parser.add_argument("--documents", type=int, default=20_000, help="when building")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", default=None, help="where a built index goes")


if __name__ == "__main__":
    bench_main(__doc__, "wide_ab.json", measure, markdown, add_arguments)
