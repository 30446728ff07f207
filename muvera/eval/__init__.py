"""Evaluation: BEIR-format loading (:mod:`.beir`), trec_eval metrics (:mod:`.metrics`) and
the side-by-side comparison of search stages (:mod:`.compare`)."""

from .beir import document_text, load_beir, load_corpus, load_qrels, load_queries
from .compare import StageComparison, StageRow, compare_stages
from .metrics import evaluate, mrr_at_k, ndcg_at_k, recall_at_k

__all__ = [
    "StageComparison",
    "StageRow",
    "compare_stages",
    "document_text",
    "evaluate",
    "load_beir",
    "load_corpus",
    "load_qrels",
    "load_queries",
    "mrr_at_k",
    "ndcg_at_k",
    "recall_at_k",
]
