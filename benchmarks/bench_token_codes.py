"""Quantized token stores for the re-rank: float16 (the default) vs int8 vs int4 codes vs
residual4 / residual4lm / residual2 (int4 / Lloyd-Max 4-bit / 2-bit codes of each token's
difference from its token cell's centroid) (:mod:`muvera.token_codes`, one float32 scale
per token).

For each case (``dataset:split:variant`` as in ``bench_quality.py``: the shared MiniLM-128
model's cached token vectors; ``raw`` = unnormalised, ``aniso3`` = a shared component
added), builds the default index (hnswlib, default candidates, calibration auto) once per
``token_dtype`` and reports: token bytes per document, index bytes per document, nDCG@10 of
the two-stage search and of exact MaxSim over the stored tokens (``search_exact``), each as
a fraction of the float16 store's, the share of the float32 exact top-10 that the stored
tokens' exact top-10 keeps, per-query latency (one query at a time, p50 / p95), and the
encoder's rate on the case's tokens (``encode_rows``, all cores, best of 3; float16: the
conversion). Nothing is tuned here (the codes have no parameter): every case is a
measurement.

Usage: ``python benchmarks/bench_token_codes.py [--cases ...]
[--formats float16,int8,int4,residual4,residual4lm,residual2]``
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

from bench_quality import CANDIDATES, found, one_at_a_time, prepare  # noqa: E402
from machine import describe, dir_bytes, machine  # noqa: E402
from runner import bench_main  # noqa: E402

from muvera import FDEConfig, Index, __version__  # noqa: E402
from muvera.token_codes import CODE_KINDS, encode_rows  # noqa: E402

ENCODE_ROWS = 200_000  # token rows the encoder's rate is measured on


def encode_rate(tokens: np.ndarray, fmt: str) -> float:
    """Rows a second the encoder writes (float16: numpy's conversion), best of 3."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        if fmt in CODE_KINDS:
            encode_rows(tokens, fmt)
        else:
            tokens.astype(np.float16)
        best = min(best, time.perf_counter() - t0)
    return len(tokens) / best


CASES = (
    "scifact:test:orig,scifact:test:raw,scifact:test:aniso3,"
    "msmarco-mini:test:orig,msmarco-mini:test:raw"
)


def measure_case(case: str, formats: list[str]) -> list[dict[str, Any]]:
    t = prepare(case)
    docs, queries, doc_ids, ndcg = t["docs"], t["queries"], t["doc_ids"], t["ndcg"]
    rows: list[dict[str, Any]] = []
    sample = np.ascontiguousarray(np.concatenate(docs)[:ENCODE_ROWS], np.float32)
    for fmt in formats:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ix"
            with Index.create(path, FDEConfig(dimension=t["dimension"]), token_dtype=fmt) as ix:
                t0 = time.perf_counter()
                ix.add(doc_ids, docs)
                build_s = time.perf_counter() - t0
                token_bytes = int(ix.manifest["tokens"]["bytes"])
                two = ix.search(queries, k=10)
                exact = ix.search_exact(queries, k=10)
                one_at_a_time(ix, queries[:20], CANDIDATES)  # warm the page cache
                times = one_at_a_time(ix, queries, CANDIDATES)
            size = dir_bytes(path)
        row = {
            "case": case,
            "token_dtype": fmt,
            "documents": len(docs),
            "tokens_per_doc": float(np.mean([len(d) for d in docs])),
            "build_s": build_s,
            "token_bytes_per_doc": token_bytes / len(docs),
            "index_bytes_per_doc": size / len(docs),
            "ndcg@10": ndcg(two.ids, two.scores),
            "exact_ndcg@10": ndcg(exact.ids, exact.scores),
            "float32_exact_ndcg@10": t["exact_ndcg"],
            "exact_top10_found": found(exact.ids, t["exact_top10"]),
            "two_stage_top10_found": found(two.ids, t["exact_top10"]),
            "p50_ms": float(np.percentile(times, 50)),
            "p95_ms": float(np.percentile(times, 95)),
            "encode_rows_per_s": encode_rate(sample, fmt),
        }
        base = rows[0] if rows else row
        row["ratio_two_stage"] = row["ndcg@10"] / base["ndcg@10"]
        row["ratio_exact"] = row["exact_ndcg@10"] / base["exact_ndcg@10"]
        row["p50_ratio"] = row["p50_ms"] / base["p50_ms"]
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()},
              file=sys.stderr, flush=True)  # fmt: skip
        rows.append(row)
    return rows


def measure(args: argparse.Namespace) -> dict[str, Any]:
    formats = args.formats.split(",")
    if formats[0] != "float16":
        raise SystemExit("--formats must start with float16 (the baseline of the ratios)")
    rows = [r for case in args.cases.split(",") for r in measure_case(case, formats)]
    return {"machine": machine(), "muvera": __version__, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{describe(result['machine'])}; muvera {result['muvera']}. Default index (hnswlib, "
        "default candidates); ratios against the float16 store in the same run.",
        "",
        "| case | tokens | token KiB/doc | index KiB/doc | nDCG@10 two-stage (x float16) "
        "| exact MaxSim on stored (x float16) | float32 exact top-10 kept | p50 ms (x) | p95 ms "
        "| encoder M rows/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['case']} | {r['token_dtype']} | {r['token_bytes_per_doc'] / 1024:.1f} "
            f"| {r['index_bytes_per_doc'] / 1024:.1f} "
            f"| {r['ndcg@10']:.4f} ({r['ratio_two_stage']:.4f}) "
            f"| {r['exact_ndcg@10']:.4f} ({r['ratio_exact']:.4f}) "
            f"| {r['exact_top10_found']:.3f} | {r['p50_ms']:.2f} ({r['p50_ratio']:.2f}) "
            f"| {r['p95_ms']:.2f} | {_rate(r)} |"
        )
    return "\n".join(lines)


def _rate(row: dict[str, Any]) -> str:
    rate = row.get("encode_rows_per_s")  # not measured before residual4lm
    return "-" if rate is None else f"{rate / 1e6:.2f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", default=CASES)
    parser.add_argument("--formats", default="float16,int8,int4,residual4,residual4lm,residual2")


if __name__ == "__main__":
    bench_main(__doc__, "token_codes.json", measure, markdown, add_arguments)
