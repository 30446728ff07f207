"""Retrieval metrics on hand-worked examples, BEIR loading and its error messages."""

from __future__ import annotations

import math

import pytest

from muvera import MuveraError
from muvera.eval import evaluate, load_beir, load_qrels, mrr_at_k, ndcg_at_k, recall_at_k


def test_ndcg_graded_gain_hand_worked():
    # ranking d1 (grade 0), d2 (grade 2), d3 (grade 1); ideal: 2, 1
    run = {"q": {"d1": 0.9, "d2": 0.8, "d3": 0.7}}
    qrels = {"q": {"d2": 2, "d3": 1, "d9": 0}}
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(run, qrels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(run, qrels, 1) == 0.0
    assert recall_at_k(run, qrels, 2) == pytest.approx(0.5)
    assert mrr_at_k(run, qrels, 10) == pytest.approx(0.5)


def test_ties_rank_by_document_id_descending_as_trec_eval():
    run = {"q": {"a": 1.0, "b": 1.0}}
    assert mrr_at_k(run, {"q": {"b": 1}}, 1) == 1.0  # "b" > "a": b first
    assert mrr_at_k(run, {"q": {"a": 1}}, 1) == 0.0


def test_queries_without_relevant_documents_are_skipped_missing_runs_score_zero():
    qrels = {"q1": {"d": 1}, "q2": {"d": 0}, "q3": {"x": 1}}
    run = {"q1": {"d": 1.0}}
    assert ndcg_at_k(run, qrels, 10) == pytest.approx(0.5)  # q1 = 1, q3 = 0, q2 skipped
    metrics = evaluate(run, qrels, ks=(1,))
    assert set(metrics) == {"ndcg@1", "recall@1", "mrr@1"}
    with pytest.raises(MuveraError, match="k must be"):
        ndcg_at_k(run, qrels, 0)


def test_load_beir(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "T", "text": "x"}\n\n{"id": 2, "text": "y"}\n'
    )
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "hello"}\n{"_id": "q2", "text": "other"}\n'
    )
    (tmp_path / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\t2\t2\n"
    )
    corpus, queries, qrels = load_beir(tmp_path)
    assert corpus == {"d1": {"title": "T", "text": "x"}, "2": {"title": "", "text": "y"}}
    assert queries == {"q1": "hello"}
    assert qrels == {"q1": {"d1": 1, "2": 2}}


def test_load_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(MuveraError, match="no BEIR folder"):
        load_beir(tmp_path / "missing")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d2", "text": \n')
    with pytest.raises(MuveraError, match=r"corpus.jsonl:2: malformed JSON"):
        load_beir(tmp_path)
    (tmp_path / "corpus.jsonl").write_text('{"text": "no id"}\n')
    with pytest.raises(MuveraError, match=r"corpus.jsonl:1: record has no '_id'"):
        load_beir(tmp_path)
    (tmp_path / "bad.tsv").write_text("query-id\tcorpus-id\tscore\nq\td\n")
    with pytest.raises(MuveraError, match=r"bad.tsv:2: expected 3"):
        load_qrels(tmp_path / "bad.tsv")
    (tmp_path / "bad2.tsv").write_text("query-id\tcorpus-id\tscore\nq\td\thigh\n")
    with pytest.raises(MuveraError, match="not an integer"):
        load_qrels(tmp_path / "bad2.tsv")


def test_load_corpus_from_jsonl_or_folder(tmp_path):
    from muvera.eval import document_text, load_corpus

    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": 1, "title": "T", "text": "x"}\n\n{"_id": "b", "text": "y"}\n')
    corpus = load_corpus(path)
    assert corpus == {"1": {"title": "T", "text": "x"}, "b": {"title": "", "text": "y"}}
    assert [document_text(d) for d in corpus.values()] == ["T x", "y"]
    path.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(MuveraError, match=r"docs.jsonl:2: duplicate id 'a'"):
        load_corpus(path)
    with pytest.raises(MuveraError, match=r"without corpus\.jsonl"):
        load_corpus(tmp_path)


def test_load_queries_rejects_duplicates(tmp_path):
    from muvera.eval import load_queries

    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "a"}\n{"_id": "r"}\n')
    assert load_queries(tmp_path) == {"q": "a", "r": ""}
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "a"}\n{"_id": "q"}\n')
    with pytest.raises(MuveraError, match=r"queries\.jsonl:2: duplicate id 'q'"):
        load_queries(tmp_path / "queries.jsonl")
