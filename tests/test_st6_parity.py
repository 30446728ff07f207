"""sentence-transformers 6 ``MultiVectorEncoder`` folders: muvera.ColBERT encodes them exactly
as ``encode_query`` / ``encode_document`` do (issue 14). The reference library is a test-time
dependency: each model is built and saved by sentence-transformers itself, from a tiny
random-weight BERT, then read back by both."""

from __future__ import annotations

import string

import numpy as np
import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("sentence_transformers", minversion="6.0")

from model_fixtures import HIDDEN, write_tokenizer  # noqa: E402
from transformers import BertConfig, BertModel  # noqa: E402

from muvera import ColBERT, MuveraError  # noqa: E402

QUERIES = ["hello world", " the cat sat on the mat. ", "", "one\ntwo  three", "a" + " dog" * 40]
DOCUMENTS = [
    "the dog ran in the park, fast!",
    "",
    "   ",
    "  leading and trailing  ",
    "line one\nline two\n\nfour",
    " ".join(["the cat sat on the mat."] * 20),  # longer than document_length
]

CASES = {
    "fixed": dict(expansion={"strategy": "fixed", "length": 12}, dense=8, normalize=True,
                  prompts={"query": "query: ", "document": "document: "}),
    "min-attend-token": dict(expansion={"strategy": "min", "length": 10, "attend": True,
                                        "token": "[unused0]"}, dense=8, normalize=True,
                             skiplist_tasks=["query", "document"]),
    "no-expansion-no-normalize": dict(expansion=None, dense=None, normalize=False,
                                      prompts={"query": "q: ", "passage": "p: "}),
    "modernbert-bpe": dict(expansion={"strategy": "fixed", "length": 16}, dense=8,
                           normalize=True, prompts={"query": "query: "},
                           base_kind="modernbert"),
}  # fmt: skip


def _build(tmp_path, name, expansion, dense, normalize, prompts=None, skiplist_tasks=None,
           base_kind="bert"):  # fmt: skip
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.multi_vector_encoder import MultiVectorEncoder
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
    from sentence_transformers.sentence_transformer.modules import Normalize

    base = tmp_path / f"{name}-base"
    if base_kind == "modernbert":  # a byte-level BPE tokenizer: spaces are tokens
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).parent / "data"))
        from make_pylate_fixtures import tiny_modernbert

        tiny_modernbert(base, 3)
    else:
        tok = write_tokenizer(base, prefixes=())
        torch.manual_seed(0)
        config = BertConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=64)  # fmt: skip
        BertModel(config).save_pretrained(base)
        tok.save_pretrained(base)
    modules = [Transformer(str(base), query_length=16, document_length=24,
                           query_expansion=expansion)]  # fmt: skip
    if dense:
        modules.append(Dense(HIDDEN, dense, bias=True, activation_function=torch.nn.Tanh(),
                             module_input_name="token_embeddings",
                             module_output_name="token_embeddings"))  # fmt: skip
    modules.append(MultiVectorMask(skiplist_words=list(string.punctuation),
                                   skiplist_tasks=skiplist_tasks))  # fmt: skip
    if normalize:
        modules.append(Normalize(module_input_name="token_embeddings"))
    model = MultiVectorEncoder(modules=modules, prompts=prompts)
    path = tmp_path / name
    model.save(str(path))
    return st.MultiVectorEncoder(str(path), device="cpu"), path


def _close(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        b = b.detach().float().cpu().numpy() if hasattr(b, "detach") else np.asarray(b)
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_multivector_encoder_parity(tmp_path, case):
    reference, path = _build(tmp_path, case, **CASES[case])
    ours = ColBERT(path, device="cpu", batch_size=3)
    assert ours.settings.layout == "sentence-transformers"
    assert "sentence-transformers" in repr(ours)
    assert ours.normalize == CASES[case]["normalize"]
    _close(ours.encode_queries(QUERIES), reference.encode_query(QUERIES))
    _close(ours.encode_documents(DOCUMENTS), reference.encode_document(DOCUMENTS))
    # per-call options as the reference takes them
    _close(ours.encode_queries(QUERIES, prompt="x: "),
           reference.encode_query(QUERIES, prompt="x: "))  # fmt: skip
    _close(ours.encode(DOCUMENTS, is_query=False, prompt_name="document",
                       normalize_embeddings=True),
           reference.encode_document(DOCUMENTS, prompt_name="document",
                                     normalize_embeddings=True))  # fmt: skip


def test_image_models_are_refused(tmp_path):
    import json

    _, path = _build(tmp_path, "m", **CASES["fixed"])
    config = path / "2_MultiVectorMask" / "config.json"
    data = json.loads(config.read_text())
    config.write_text(json.dumps({**data, "keep_only_token_ids": [5]}))
    with pytest.raises(MuveraError, match="keep_only_token_ids"):
        ColBERT(path, device="cpu")
    config.write_text(json.dumps({**data, "skiplist_tasks": ["images"]}))
    with pytest.raises(MuveraError, match="skiplist_tasks"):
        ColBERT(path, device="cpu")


# -- token pooling -------------------------------------------------------------------------
@pytest.mark.parametrize("pool_factor", [1.5, 2, 3, 1000])
@pytest.mark.parametrize("protected", [0, 1, 3])
def test_token_pooling_matches_the_reference(pool_factor, protected):
    """PyLate's pooling (condensed Ward, protected tokens first, means not re-normalised) as
    sentence-transformers 6 implements it with normalize_embeddings=False."""
    from sentence_transformers.multi_vector_encoder.modules import HierarchicalTokenPooling

    from muvera.models.pooling import pool_tokens

    rng = np.random.default_rng(0)
    docs = []
    for n in (0, 1, 2, 3, 5, 17, 64, 200):
        x = rng.standard_normal((n, 16)).astype(np.float32)
        docs.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9))
    reference = HierarchicalTokenPooling(pool_factor=pool_factor, num_protected_tokens=protected,
                                         normalize_embeddings=False)  # fmt: skip
    _close(pool_tokens(docs, pool_factor, protected),
           reference.pool([torch.from_numpy(d) for d in docs]))  # fmt: skip


def test_encode_documents_pools_as_pylate(tmp_path):
    from muvera.models.pooling import pool_tokens

    _, path = _build(tmp_path, "m", **CASES["fixed"])
    model = ColBERT(path, device="cpu")
    plain = model.encode_documents(DOCUMENTS)
    pooled = model.encode(DOCUMENTS, is_query=False, prompt_name="document", pool_factor=2)
    _close(pooled, [torch.from_numpy(x) for x in pool_tokens(plain, 2, 1)])
    assert sum(len(x) for x in pooled) < sum(len(x) for x in plain)
    tensors = model.encode_documents(DOCUMENTS, pool_factor=2, as_tensors=True)
    _close([t.numpy() for t in tensors], [torch.from_numpy(x) for x in pooled])
    assert [len(x) for x in model.encode(QUERIES, pool_factor=2)] == [12] * len(QUERIES)
    for bad in (0.5, float("nan"), "2", True):
        with pytest.raises(MuveraError, match="pool_factor"):
            pool_tokens(plain, bad)
    with pytest.raises(MuveraError, match="protected_tokens"):
        pool_tokens(plain, 2, -1)
