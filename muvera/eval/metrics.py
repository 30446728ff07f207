"""Retrieval metrics with trec_eval's definitions.

Runs and qrels are plain ``dict[query_id, dict[doc_id, value]]``: scores for a run,
integer relevance grades for qrels. Metrics average over the queries that have at least
one relevant document in the qrels (a query missing from the run scores 0), as BEIR does
through pytrec_eval. Ties in a run are broken as trec_eval does: equal scores rank by
document id, descending.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..errors import MuveraError

__all__ = ["Qrels", "Run", "evaluate", "mrr_at_k", "ndcg_at_k", "recall_at_k"]

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def _ranked(scores: Mapping[str, float]) -> list[str]:
    by_id = sorted(scores, reverse=True)  # trec_eval: ties by document id, descending
    return sorted(by_id, key=lambda doc: -scores[doc])


def _per_query(run: Run, qrels: Qrels, k: int, metric: str) -> dict[str, float]:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise MuveraError(f"k must be a positive int, got {k!r}")
    out: dict[str, float] = {}
    for qid, judged in qrels.items():
        relevant = {d: g for d, g in judged.items() if g > 0}
        if not relevant:
            continue
        top = _ranked(run.get(qid, {}))[:k]
        if metric == "ndcg":
            dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(top))
            ideal = sorted(relevant.values(), reverse=True)[:k]
            idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
            out[qid] = dcg / idcg
        elif metric == "recall":
            out[qid] = sum(1 for d in top if d in relevant) / len(relevant)
        else:
            out[qid] = next((1.0 / (i + 1) for i, d in enumerate(top) if d in relevant), 0.0)
    return out


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values) if values else 0.0


def ndcg_at_k(run: Run, qrels: Qrels, k: int = 10) -> float:
    """Mean nDCG@k with linear gain (the grade), as trec_eval's ``ndcg_cut``.

    >>> ndcg_at_k({"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 1}}, k=10)  # doctest: +ELLIPSIS
    0.6309...
    """
    return _mean(_per_query(run, qrels, k, "ndcg"))


def recall_at_k(run: Run, qrels: Qrels, k: int = 100) -> float:
    """Mean fraction of each query's relevant documents found in its top k.

    >>> recall_at_k({"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 1, "c": 2}}, k=2)
    0.5
    """
    return _mean(_per_query(run, qrels, k, "recall"))


def mrr_at_k(run: Run, qrels: Qrels, k: int = 10) -> float:
    """Mean reciprocal rank of the first relevant document within the top k (0 if none).

    >>> mrr_at_k({"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 1}}, k=10)
    0.5
    """
    return _mean(_per_query(run, qrels, k, "mrr"))


def evaluate(run: Run, qrels: Qrels, ks: tuple[int, ...] = (10, 100)) -> dict[str, float]:
    """``{"ndcg@k", "recall@k", "mrr@k"}`` for each ``k`` in ``ks``."""
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"ndcg@{k}"] = ndcg_at_k(run, qrels, k)
        metrics[f"recall@{k}"] = recall_at_k(run, qrels, k)
        metrics[f"mrr@{k}"] = mrr_at_k(run, qrels, k)
    return metrics
