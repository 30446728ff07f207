"""First-stage variants on SciFact, measured before deciding defaults.

Compares, with brute-force FDE search over the default 10,240-dim FDE:

* **default**: the reference FDE.
* **query ball carving** (threshold tau): query tokens are greedily grouped (a token
  and every later unassigned token with cosine >= tau) and each group is replaced by its
  sum before the query FDE is built; re-ranking still uses the original query tokens.
* **centering calibration**: SimHash partitions are computed on ``x - mean`` (the mean
  of all corpus tokens) instead of ``x``; the projected values are unchanged. Token
  vectors of a ColBERT model share a common direction, which leaves many partitions
  empty; centering rebalances them.

Reports FDE-only nDCG@10 and, for re-ranking the FDE top-100/200, nDCG@10 as a fraction
of exact MaxSim and the share of the exact top-10 found. Writes
``benchmarks/results/first_stage_scifact.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from encode_beir import SHARED, load_cached, split_tokens  # noqa: E402

from muvera import FDEConfig, FDEEncoder, maxsim  # noqa: E402
from muvera.eval import load_qrels, ndcg_at_k  # noqa: E402
from muvera.fde.numpy_steps import NumpyFDE  # noqa: E402
from muvera.fde.plan import gray_decode  # noqa: E402


def carve(query: np.ndarray, tau: float) -> np.ndarray:
    unit = query / np.linalg.norm(query, axis=1, keepdims=True)
    free = np.ones(len(query), dtype=bool)
    balls = []
    for i in range(len(query)):
        if not free[i]:
            continue
        members = free & (unit @ unit[i] >= tau)
        members[i] = True
        free &= ~members
        balls.append(query[members].sum(axis=0))
    return np.array(balls, dtype=np.float32)


def centered_fde(
    encoder: FDEEncoder, items: list[np.ndarray], mean: np.ndarray, document: bool
) -> np.ndarray:
    """The FDE with partitions taken from ``x - mean`` (values from ``x``)."""
    kernel = NumpyFDE(encoder.plan)
    R, B, p, k = kernel.R, kernel.B, kernel.p, kernel.k
    X = np.concatenate(items)
    lengths = np.array([len(x) for x in items])
    owner = np.repeat(np.arange(len(items)), lengths)
    bits = ((X - mean) @ kernel.simhash > 0).reshape(len(X), k, R)  # j-major columns
    code = np.zeros((len(X), R), dtype=np.int64)
    for j in range(k):
        code = (code << 1) | bits[:, j, :]
    rows = (owner[:, None] * R + np.arange(R)) * B + gray_decode(code, k)
    values = (X @ kernel.ams).reshape(len(X) * R, p)
    scatter = sp.csc_matrix(
        (np.ones(rows.size, np.float32), rows.ravel(), np.arange(rows.size + 1)),
        shape=(len(items) * R * B, rows.size),
    )
    sums = np.asarray(scatter @ values, dtype=np.float32)
    if document:
        counts = np.bincount(rows.ravel(), minlength=len(items) * R * B)
        sums /= np.maximum(counts, 1)[:, None]
    return sums.reshape(len(items), -1)


def main() -> None:
    data = SHARED / "data" / "scifact"
    z = load_cached(data, SHARED / "models" / "minilm-colbert-128")
    docs = [d.astype(np.float32) for d in split_tokens(z["doc_tokens"], z["doc_lengths"])]
    queries = [q.astype(np.float32) for q in split_tokens(z["query_tokens"], z["query_lengths"])]
    doc_ids = [str(x) for x in z["doc_ids"]]
    qids = [str(x) for x in z["query_ids"]]
    qrels = load_qrels(data / "qrels" / "test.tsv")
    exact = maxsim(queries, docs)

    def run(scores: np.ndarray) -> dict:
        top = np.argsort(-scores, axis=1, kind="stable")[:, :100]
        return {
            qids[i]: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i in range(len(qids))
        }

    exact_ndcg = ndcg_at_k(run(exact), qrels, 10)
    exact_top10 = np.argsort(-exact, axis=1)[:, :10]
    rows_idx = np.arange(len(queries))[:, None]

    def evaluate(name: str, fde_scores: np.ndarray, extra: dict) -> dict:
        order = np.argsort(-fde_scores, axis=1, kind="stable")
        row = {"name": name, **extra, "fde_ndcg@10": ndcg_at_k(run(fde_scores), qrels, 10)}
        for c in (100, 200):
            masked = np.full_like(exact, -np.inf)
            masked[rows_idx, order[:, :c]] = exact[rows_idx, order[:, :c]]
            row[f"rerank_{c}_ratio"] = ndcg_at_k(run(masked), qrels, 10) / exact_ndcg
            row[f"exact_top10_in_{c}"] = float(
                np.mean(
                    [len(set(exact_top10[i]) & set(order[i, :c])) / 10 for i in range(len(queries))]
                )
            )
        print(row, file=sys.stderr)
        return row

    encoder = FDEEncoder(FDEConfig(dimension=128))
    doc_fdes = encoder.encode_documents(docs)
    rows = [evaluate("default", encoder.encode_queries(queries) @ doc_fdes.T, {})]
    for tau in (0.9, 0.8, 0.7):
        carved = [carve(q, tau) for q in queries]
        tokens = float(np.mean([len(c) for c in carved]))
        rows.append(
            evaluate(
                f"query ball carving tau={tau}",
                encoder.encode_queries(carved) @ doc_fdes.T,
                {"mean_query_tokens": tokens},
            )
        )
    mean = np.concatenate(docs).mean(axis=0)
    centered_docs = np.concatenate(
        [centered_fde(encoder, docs[i : i + 500], mean, True) for i in range(0, len(docs), 500)]
    )
    rows.append(
        evaluate(
            "centering calibration",
            centered_fde(encoder, queries, mean, False) @ centered_docs.T,
            {"mean_norm": float(np.linalg.norm(mean))},
        )
    )
    out = ROOT / "benchmarks" / "results" / "first_stage_scifact.json"
    out.write_text(json.dumps({"exact_ndcg@10": exact_ndcg, "rows": rows}, indent=2) + "\n")
    print("| variant | FDE nDCG@10 | top-100 + MaxSim: x exact / exact top-10 found | top-200 |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['name']} | {r['fde_ndcg@10']:.3f} "
            f"| {r['rerank_100_ratio']:.4f} / {r['exact_top10_in_100']:.1%} "
            f"| {r['rerank_200_ratio']:.4f} / {r['exact_top10_in_200']:.1%} |"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
