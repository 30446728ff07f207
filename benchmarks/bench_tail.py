"""Where a single query's tail comes from, and what the thread settings of a search cost.

SciFact with the shared model (``encode_beir.py``'s cached token vectors), the default
index (``FDEConfig(dimension=128)``, hnswlib store, token cells), ``candidates=100``,
``k=10``, read-only. One process; the settings take turns, all queries of a round each
(after 20 warm-up queries; a different setting first each round), so every ratio comes from
one run:

* ``default``: this checkout.
* ``before``: the thread settings of the tree before this benchmark existed, all at once:
  a helper thread in every single-query walk, a batch's cell scans one query after the
  other, each query's cell table a BLAS product (OpenBLAS threads, which keep spinning
  after it).
* ``helper walk`` / ``serial batch cells`` / ``BLAS table``: ``default`` with one of those
  back.

``--loads 0,1`` runs everything once per entry, beside that many processes that keep one
core busy each (a machine under load).

Per setting: single-query p50 / p95 / p99 and p95 / p50 (all rounds pooled), best
batch queries/s (the whole query set as one ``search``), and whether the top 10 is the same
as ``default``'s. Then the kernels alone: the int8 walk of one query on one thread vs with
the helper, a query's cell table by the kernel vs BLAS, and a cell scan by tokens scanned
with one vs two threads on a table made just before it (as a search does); last, the
default settings searched from 1 and 2 Python threads at once (as the server runs
requests). Prints tables and writes ``benchmarks/results/tail.json``.

Usage: ``python benchmarks/bench_tail.py [--rounds 4] [--loads 0,1] [--data scifact] [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "tail.json"
SETTINGS = ["default", "before", "helper walk", "serial batch cells", "BLAS table"]
_TABLE: dict[str, Any] = {}


def blas_table(self: Any, query: np.ndarray) -> np.ndarray:
    """The query's cell table as the tree before this benchmark made it: a BLAS product."""
    q = np.asarray(query, np.float32)
    out = np.zeros((self.n_cells, max(32, -(-q.shape[0] // 32) * 32)), dtype=np.float32)
    np.matmul(self.fine, q.T, out=out[:, : q.shape[0]])
    return out


def apply(setting: str, index: Any) -> None:
    """Put the thread settings of ``setting`` in place (module attributes the search reads
    at call time; the benchmark owns its process)."""
    import muvera.cells as cells
    import muvera.stores.cell_file as cell_file
    from muvera import native

    old = setting == "before"
    index.store.num_threads = native.default_threads() if old or setting == "helper walk" else -1
    serial = old or setting == "serial batch cells"
    one = types.SimpleNamespace(default_threads=lambda: 1)
    cell_file.native = one if serial else native  # type: ignore[assignment]
    _TABLE.setdefault("kernel", cells.Cells.table)
    blas = old or setting == "BLAS table"
    cells.Cells.table = blas_table if blas else _TABLE["kernel"]  # type: ignore[method-assign]


def stats(ms: np.ndarray) -> dict[str, float]:
    p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99))
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "p95_over_p50": p95 / p50}


def kernels(index: Any, queries: list[np.ndarray], rounds: int) -> dict[str, Any]:
    """The walk, the table and the cell scan alone (see the module docstring)."""
    from muvera import native

    store, kernel = index.store, native.load()
    fdes = index.encoder.encode_queries(queries)
    graph = store.graphs[0]
    walk: dict[str, list[float]] = {"1 thread": [], "helper": []}
    for _ in range(rounds):
        for i in range(len(queries)):
            for name, threads in (("1 thread", 1), ("helper", 2)):
                t0 = time.perf_counter()
                graph.search(kernel, fdes[i : i + 1], 100, store.ef, threads, None)
                walk[name].append(1000 * (time.perf_counter() - t0))
    cells, codes = store.cells, store.cells.code_rows()
    tables: dict[str, list[float]] = {"kernel": [], "BLAS": []}
    for q in queries:
        for name, make in (("kernel", _TABLE["kernel"]), ("BLAS", blas_table)):
            t0 = time.perf_counter()
            make(cells.cells, q)
            tables[name].append(1000 * (time.perf_counter() - t0))
    live = np.flatnonzero(store._live)
    scans = []
    for share in (0.25, 1, 4):
        pick = np.resize(live, int(live.size * share))
        offsets, lengths = store.offsets[pick], store.lengths[pick]
        out = np.empty(pick.size, np.float32)
        times: dict[int, list[float]] = {1: [], 2: []}
        for q in queries[:150]:
            for threads in (1, 2):
                table = cells.cells.table(np.asarray(q, np.float32))
                t0 = time.perf_counter()
                kernel.cell_scores(table, codes, offsets, lengths, out, threads)
                times[threads].append(1000 * (time.perf_counter() - t0))
        scans.append(
            {"tokens": int(lengths.sum()), **{f"{t} thread p50_ms": float(np.median(v))
                                              for t, v in times.items()}}
        )  # fmt: skip
    return {
        "walk": {k: stats(np.asarray(v)) for k, v in walk.items()},
        "table": {k: stats(np.asarray(v)) for k, v in tables.items()},
        "cell_scan": scans,
    }


def settings(index: Any, queries: list[np.ndarray], rounds: int) -> dict[str, Any]:
    """Every setting's single-query times, batch rate and top 10 (module docstring)."""
    times: dict[str, list[float]] = {s: [] for s in SETTINGS}
    tops: dict[str, list[list[int]]] = {s: [] for s in SETTINGS}
    qps: dict[str, float] = {s: 0.0 for s in SETTINGS}
    for r in range(rounds):
        for j in range(len(SETTINGS)):  # a different setting first each round
            setting = SETTINGS[(r + j) % len(SETTINGS)]
            apply(setting, index)
            for q in queries[:20]:  # warm-up: caches, thread pools
                index.search([q], k=10, candidates=100)
            for q in queries:
                t0 = time.perf_counter()
                result = index.search([q], k=10, candidates=100)
                times[setting].append(1000 * (time.perf_counter() - t0))
                if r == 0:
                    tops[setting].append(list(map(int, result.ids[0])))
            t0 = time.perf_counter()
            index.search(queries, k=10, candidates=100)
            qps[setting] = max(qps[setting], len(queries) / (time.perf_counter() - t0))
    apply("default", index)
    return {
        s: {
            **stats(np.asarray(times[s])),
            "batch_qps": qps[s],
            "same_top10_as_default": float(
                np.mean([a == b for a, b in zip(tops[s], tops["default"], strict=True)])
            ),
        }
        for s in SETTINGS
    }


def concurrent(index: Any, queries: list[np.ndarray], rounds: int) -> dict[str, Any]:
    """Single-query searches from 1 and 2 Python threads at once (as the server runs
    requests), each thread its share of the queries: per-query times and total queries/s."""
    import threading

    out = {}
    for n in (1, 2):
        times: list[float] = []

        def work(part: list[np.ndarray], times: list[float] = times) -> None:
            for q in part:
                t0 = time.perf_counter()
                index.search([q], k=10, candidates=100)
                times.append(1000 * (time.perf_counter() - t0))

        t0 = time.perf_counter()
        for _ in range(rounds):
            threads = [threading.Thread(target=work, args=(queries[i::n],)) for i in range(n)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        out[str(n)] = {**stats(np.asarray(times)), "qps": len(times) / (time.perf_counter() - t0)}
    return out


def measure(rounds: int, loads: list[int], dataset: str = "scifact") -> dict[str, Any]:
    from encode_beir import SHARED, load_cached, split_tokens
    from machine import machine

    from muvera import FDEConfig, Index, __version__

    data, model = SHARED / "data" / dataset, SHARED / "models" / "minilm-colbert-128"
    cached = load_cached(data, model)
    docs = split_tokens(cached["doc_tokens"], cached["doc_lengths"])
    queries = split_tokens(cached["query_tokens"], cached["query_lengths"])
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        with Index.create(Path(tmp) / "index", FDEConfig(dimension=128)) as index:
            index.add(list(range(len(docs))), docs)
        index = Index.open(Path(tmp) / "index", mode="r")
        for load in loads:
            busy = [
                subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)
            ]
            try:
                runs[str(load)] = {
                    "settings": settings(index, queries, rounds),
                    "kernels": kernels(index, queries, max(1, rounds - 1)),
                    "concurrent": concurrent(index, queries, max(1, rounds // 2)),
                }
            finally:
                for process in busy:
                    process.kill()
    return {
        "muvera_version": __version__,
        "machine": machine(),
        "dataset": dataset,
        "rounds": rounds,
        "documents": len(docs),
        "queries": len(queries),
        "runs": runs,
    }


def _ms(r: dict[str, float]) -> str:
    """The p50 | p95 | p99 cells of a row."""
    return f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f}"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    dataset = results.get("dataset", "scifact")
    lines = [
        f"{'SciFact' if dataset == 'scifact' else dataset}, {results['documents']:,} documents, "
        f"{results['queries']} queries, "
        f"candidates 100, {results['rounds']} rounds, settings taking turns; "
        f"{m.get('cpu', '?')} ({', '.join(m.get('flags', []))}), "
        f"{m.get('kernel_variant', '?')} kernels.",
        "",
        "| busy processes | setting | p50 ms | p95 ms | p99 ms | p95 / p50 | batch q/s | "
        "same top 10 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for load, run in results["runs"].items():
        for name, r in run["settings"].items():
            lines.append(
                f"| {load} | {name} | {_ms(r)} | {r['p95_over_p50']:.2f} | "
                f"{r['batch_qps']:,.0f} | {r['same_top10_as_default']:.3f} |"
            )
    lines += [
        "",
        "| busy processes | kernel alone | p50 ms | p95 ms | p99 ms |",
        "|---:|---|---:|---:|---:|",
    ]
    for load, run in results["runs"].items():
        k = run["kernels"]
        for group, label in (("walk", "int8 walk of one query"), ("table", "cell table")):
            for name, r in k[group].items():
                lines.append(f"| {load} | {label}: {name} | {_ms(r)} |")
    if all("concurrent" in run for run in results["runs"].values()):
        lines += [
            "",
            "| busy processes | searching threads | p50 ms | p95 ms | p99 ms | p95 / p50 | q/s |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for load, run in results["runs"].items():
            for n, r in run["concurrent"].items():
                lines.append(
                    f"| {load} | {n} | {_ms(r)} | {r['p95_over_p50']:.2f} | {r['qps']:,.0f} |"
                )
    lines += [
        "",
        "| busy processes | cell scan, tokens | 1 thread p50 ms | 2 threads p50 ms |",
        "|---:|---:|---:|---:|",
    ]
    for load, run in results["runs"].items():
        for r in run["kernels"]["cell_scan"]:
            lines.append(
                f"| {load} | {r['tokens']:,} | {r['1 thread p50_ms']:.2f} | "
                f"{r['2 thread p50_ms']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--loads", default="0,1", help="busy processes beside, per run")
    parser.add_argument("--data", default="scifact", help="a BEIR folder in ../shared/data")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print a results table")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    results = measure(args.rounds, [int(x) for x in args.loads.split(",")], args.data)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"wrote {args.out}")
    from render_docs import refresh

    refresh(args.out)


if __name__ == "__main__":
    main()
