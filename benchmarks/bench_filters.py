"""Filtered search: does a filter keep k hits, the exact top 10, and the speed?

Builds the default index (hnswlib) over the cached token vectors of a BEIR set
(``--data``, SciFact by default; ``encode_beir.py --data ...`` caches them) from
``../shared/models/minilm-colbert-128`` with a payload ``{"bucket": i % 100}`` per document,
then for filters letting through 50%, 10%, 2% and 0.5% of the documents
(``bucket < 50`` ...) runs the set's queries one at a time with the defaults (k = 10,
100 candidates) and compares with brute-force exact MaxSim over the documents that pass
(``search_exact`` with the same filter): share of queries with 10 hits, share of the
exact filtered top 10 found, p50 latency (and the unfiltered search's, for reference).
At or below 4 x candidates passing documents the index scores them all exactly.
Prints a table and writes ``benchmarks/results/filters.json``.

Usage: ``python benchmarks/bench_filters.py [--data ../shared/data/msmarco-mini --out
benchmarks/results/filters_msmarco.json]``
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

from encode_beir import SHARED, load_cached, split_tokens  # noqa: E402
from machine import describe, machine  # noqa: E402
from runner import bench_main  # noqa: E402

from muvera import FDEConfig, Index, __version__  # noqa: E402

SHARES = (None, 50, 10, 2, 0.5)  # percent of documents passing (None: no filter)


def measure(data: Path) -> dict[str, Any]:
    cached = load_cached(data, SHARED / "models" / "minilm-colbert-128")
    docs = split_tokens(cached["doc_tokens"], cached["doc_lengths"])
    queries = split_tokens(cached["query_tokens"], cached["query_lengths"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        with Index.create(path, FDEConfig(dimension=128)) as index:
            payloads = [{"bucket": (i * 37) % 1000 / 10} for i in range(len(docs))]
            index.add(list(range(len(docs))), docs, payloads)
        index = Index.open(path, mode="r")
        for share in SHARES:
            f = None if share is None else {"must": [{"key": "bucket", "range": {"lt": share}}]}
            passing = len(docs) if share is None else sum(p["bucket"] < share for p in payloads)
            index.search(queries[:10], k=10, query_filter=f)  # warm-up (the filter's mask)
            times, full, found = [], 0, []
            exact = index.search_exact(queries, k=10, query_filter=f)
            for i, q in enumerate(queries):
                t0 = time.perf_counter()
                result = index.search([q], k=10, query_filter=f)
                times.append(time.perf_counter() - t0)
                hits = [x for x in result.ids[0].tolist() if x != -1]
                want = [x for x in exact.ids[i].tolist() if x != -1]
                full += len(hits) == min(10, passing)
                found.append(len(set(hits) & set(want)) / max(len(want), 1))
            rows.append({
                "share_percent": share,
                "passing": passing,
                "queries_with_all_hits": full / len(queries),
                "exact_filtered_top10_found": float(np.mean(found)),
                "p50_ms": 1000 * float(np.percentile(times, 50)),
                "p95_ms": 1000 * float(np.percentile(times, 95)),
                "exact_scoring": share is not None and passing <= 4 * 100,
            })  # fmt: skip
    return {"muvera_version": __version__, "machine": machine(), "dataset": data.name,
            "documents": len(docs), "queries": len(queries), "rows": rows}  # fmt: skip


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"{describe(r['machine'])}; {r.get('dataset', 'scifact')}, {r['documents']:,} "
        f"documents, {r['queries']} "
        "queries one at a time, k = 10, 100 candidates; truth: `search_exact` with the filter:",
        "",
        "| documents passing | queries with 10 hits | exact filtered top-10 found | p50 ms | "
        "p95 ms | how |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in r["rows"]:
        share = "all (no filter)" if row["share_percent"] is None else (
            f"{row['share_percent']:g}% ({row['passing']:,})"
        )  # fmt: skip
        how = "exact MaxSim over them" if row["exact_scoring"] else "graph walk past the others"
        if row["share_percent"] is None:
            how = "graph walk"
        lines.append(
            f"| {share} | {100 * row['queries_with_all_hits']:.1f}% | "
            f"{100 * row['exact_filtered_top10_found']:.1f}% | {row['p50_ms']:.2f} | "
            f"{row['p95_ms']:.2f} | {how} |"
        )
    return "\n".join(lines)


def main() -> None:
    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", type=Path, default=SHARED / "data" / "scifact")

    bench_main(__doc__, "filters.json", lambda args: measure(args.data), markdown, arguments)


if __name__ == "__main__":
    main()
