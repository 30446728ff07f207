"""Document token pooling (PyLate's ``pool_factor``): quality, FDE time and index size.

For SciFact (test queries) and msmarco-mini, with the shared MiniLM-128 model's cached token
vectors (``encode_beir.py``: documents as PyLate encodes them, normalised, skiplist
dropped), each ``pool_factor`` pools every document's tokens
(:func:`muvera.models.pooling.pool_tokens`, protected_tokens=1), then builds the default
index (hnswlib, default candidates) and reports: tokens per document, pooling time, FDE
encoding time of all documents, index bytes per document, nDCG@10 of the two-stage search
and of exact MaxSim on the pooled tokens, both as a fraction of exact MaxSim on the
unpooled tokens. Queries are never pooled.

Usage: ``python benchmarks/bench_pooling.py [--factors 1,2,3] [--datasets scifact,msmarco-mini]``
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
from machine import describe, dir_bytes, machine  # noqa: E402
from runner import bench_main  # noqa: E402

from muvera import FDEConfig, FDEEncoder, Index, __version__  # noqa: E402
from muvera.eval import load_qrels, ndcg_at_k  # noqa: E402
from muvera.models.pooling import pool_tokens  # noqa: E402

MODEL = SHARED / "models" / "minilm-colbert-128"


def measure_dataset(name: str, factors: list[float]) -> list[dict[str, Any]]:
    data = SHARED / "data" / name
    z = load_cached(data, MODEL)
    docs = [d.astype(np.float32) for d in split_tokens(z["doc_tokens"], z["doc_lengths"])]
    queries = [q.astype(np.float32) for q in split_tokens(z["query_tokens"], z["query_lengths"])]
    doc_ids = [str(x) for x in z["doc_ids"]]
    qids = [str(x) for x in z["query_ids"]]
    qrels = load_qrels(data / "qrels" / "test.tsv")

    def ndcg(result: Any) -> float:
        run = {
            qids[i]: {str(d): float(s) for d, s in zip(ids, sc, strict=True) if d != -1}
            for i, (ids, sc) in enumerate(zip(result.ids, result.scores, strict=True))
        }
        return ndcg_at_k(run, qrels, 10)

    rows = []
    baseline = None
    for factor in factors:
        t0 = time.perf_counter()
        pooled = docs if factor == 1 else pool_tokens(docs, factor, 1)
        pool_s = time.perf_counter() - t0
        encoder = FDEEncoder(FDEConfig(dimension=docs[0].shape[1]))
        t0 = time.perf_counter()
        encoder.encode_documents(pooled)
        fde_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ix"
            with Index.create(path, encoder.config) as index:
                index.add(doc_ids, pooled)
                two_stage = ndcg(index.search(queries, k=10))
                exact = ndcg(index.search_exact(queries, k=10))
            size = dir_bytes(path)
        if baseline is None:
            baseline = exact
        row = {
            "dataset": name,
            "pool_factor": factor,
            "tokens_per_doc": float(np.mean([len(d) for d in pooled])),
            "pool_s": pool_s,
            "fde_s": fde_s,
            "bytes_per_doc": size / len(docs),
            "ndcg@10": two_stage,
            "exact_ndcg@10": exact,
            "ratio_two_stage": two_stage / baseline,
            "ratio_exact": exact / baseline,
        }
        print(row, file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def measure(args: argparse.Namespace) -> dict[str, Any]:
    factors = [float(x) for x in args.factors.split(",")]
    rows = [r for name in args.datasets.split(",") for r in measure_dataset(name, factors)]
    return {"machine": machine(), "muvera": __version__, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{describe(result['machine'])}; muvera {result['muvera']}. Default index; ratios "
        "against exact MaxSim on the unpooled tokens.",
        "",
        "| dataset | pool_factor | tokens/doc | pooling s | FDE s (all docs) | KiB/doc | "
        "nDCG@10 two-stage (x unpooled exact) | exact MaxSim on pooled (x) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['dataset']} | {r['pool_factor']:g} | {r['tokens_per_doc']:.1f} "
            f"| {r['pool_s']:.1f} | {r['fde_s']:.2f} | {r['bytes_per_doc'] / 1024:.1f} "
            f"| {r['ndcg@10']:.4f} ({r['ratio_two_stage']:.3f}) "
            f"| {r['exact_ndcg@10']:.4f} ({r['ratio_exact']:.3f}) |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--factors", default="1,2,3")
    parser.add_argument("--datasets", default="scifact,msmarco-mini")


if __name__ == "__main__":
    bench_main(__doc__, "pooling.json", measure, markdown, add_arguments)
