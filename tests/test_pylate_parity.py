"""muvera.ColBERT against PyLate 1.6's own outputs on tiny models PyLate saved or loaded
(tests/data/pylate-1.6, written by tests/data/make_pylate_fixtures.py): a BERT model with
one Dense layer, one with query/document prompts, a ModernBERT model with two Dense
layers, a Stanford checkpoint and a custom-code model; queries and documents with edge
cases, normalised and raw, token counts included (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from muvera import ColBERT

DATA = Path(__file__).parent / "data" / "pylate-1.6"
FAMILIES = sorted(p.name for p in DATA.iterdir() if p.is_dir())
TEXTS = json.loads((DATA / "texts.json").read_text())  # what the fixture script encoded
QUERIES, DOCUMENTS, POOLED = TEXTS["queries"], TEXTS["documents"], TEXTS["pooled"]
# (on the tiny ModernBERT's near-identical tokens PyLate's own pooling fails: "negative
# distances"; muvera clamps them as sentence-transformers 6 does)
POOLED_BY_PYLATE = {"bert-1dense", "bert-prompts", "custom-code", "stanford"}
LAYOUTS = {"stanford": "stanford"}


def test_fixture_was_written_by_pylate_1_6():
    assert json.loads((DATA / "versions.json").read_text())["pylate"] == "1.6.0"
    assert FAMILIES == ["bert-1dense", "bert-prompts", "custom-code", "modernbert-2dense",
                        "stanford"]  # fmt: skip


def _check(out, expected, key, family):
    assert [len(x) for x in out] == expected[key + "_lengths"].tolist(), (family, key)
    np.testing.assert_allclose(np.concatenate(out), expected[key], atol=1e-4, rtol=1e-4,
                               err_msg=f"{family} {key}")  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_outputs_equal_pylate(family):
    """``ColBERT.encode`` is PyLate's ``encode`` (no side prompt unless asked);
    ``encode_queries`` / ``encode_documents`` add the side's prompt, as PyLate does with
    ``prompt_name="query"`` / ``"document"`` (and sentence-transformers' encode_query)."""
    expected = np.load(DATA / family / "expected.npz")
    model = ColBERT(DATA / family / "model", device="cpu", batch_size=2,
                    trust_remote_code=family == "custom-code")  # fmt: skip
    assert model.settings.layout == LAYOUTS.get(family, "pylate")
    for side, texts in (("queries", QUERIES), ("documents", DOCUMENTS)):
        for norm in ("norm", "raw"):
            out = model.encode(texts, is_query=side == "queries",
                               normalize_embeddings=norm == "norm")  # fmt: skip
            _check(out, expected, f"{side}_{norm}", family)
        encode = model.encode_queries if side == "queries" else model.encode_documents
        _check(encode(texts), expected, f"{side}_prompted", family)
    pooled = model.encode(POOLED, is_query=False, pool_factor=2)  # (never fails here)
    if "documents_pooled" in expected or family in POOLED_BY_PYLATE:
        _check(pooled, expected, "documents_pooled", family)
