"""muvera.ColBERT: PyLate parity on the shared model, every checkpoint layout, bad input."""

from __future__ import annotations

import json
import os
import shutil
import string

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from model_fixtures import HIDDEN, plain_model, pylate_model, stanford_model  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

from conftest import SHARED  # noqa: E402
from muvera import MuveraError  # noqa: E402
from muvera.models import ColBERT  # noqa: E402

MODEL = SHARED / "models" / "minilm-colbert-128"
PARITY = SHARED / "golden" / "pylate_minilm128.npz"
TEXTS = [
    "the cat sat on the mat.",
    "hello, world! query vectors",
    "",
    "a dog ran in the park " * 12,  # longer than every length below: truncated
    "MUVERA fast?!",
]


# -- PyLate parity on the real model ---------------------------------------------------
@pytest.fixture(scope="module")
def parity():
    if not (MODEL.is_dir() and PARITY.is_file()):
        pytest.skip("../shared model or PyLate parity vectors are absent")
    with np.load(PARITY, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _check(out, tokens, lengths):
    assert [len(o) for o in out] == lengths.tolist()
    assert all(o.dtype == np.float32 for o in out)
    np.testing.assert_allclose(np.concatenate(out), tokens, atol=1e-5, rtol=1e-5)


def test_pylate_parity_shared_model(parity):
    queries = [str(q) for q in parity["queries"]]
    documents = [str(d) for d in parity["documents"]]
    model = ColBERT(MODEL, device="cpu")
    assert model.settings.layout == "pylate" and model.dimension == 128
    _check(
        model.encode_queries(queries, batch_size=2), parity["query_tokens"], parity["query_lengths"]
    )
    _check(
        model.encode_documents(documents, batch_size=4),
        parity["document_tokens"],
        parity["document_lengths"],
    )
    raw = ColBERT(MODEL, device="cpu", normalize=False)
    _check(
        raw.encode_queries(queries), parity["query_tokens_unnormalized"], parity["query_lengths"]
    )
    _check(
        raw.encode_documents(documents),
        parity["document_tokens_unnormalized"],
        parity["document_lengths"],
    )


def test_pylate_parity_with_query_expansion_from_the_config(parity, tmp_path):
    directory = tmp_path / "expanded"
    shutil.copytree(MODEL, directory)
    config_path = directory / "config_sentence_transformers.json"
    os.chmod(config_path, 0o644)
    config = json.loads(config_path.read_text())
    config["do_query_expansion"] = True
    config_path.write_text(json.dumps(config))
    model = ColBERT(directory, device="cpu")
    out = model.encode_queries([str(q) for q in parity["queries"]])
    _check(out, parity["query_tokens_expanded"], parity["query_lengths_expanded"])
    assert {len(o) for o in out} == {32}


# -- a literal, one-text-at-a-time computation for the fixture models -------------------
def literal(
    directory,
    text,
    *,
    is_query,
    prefix,
    length,
    expand,
    attend,
    skip_words,
    dense,
    normalize=True,
    transformer_dir=None,
):
    """Build the ids by hand, run the bare transformer, apply Dense layers by hand."""
    src = str(transformer_dir or directory)
    tok = AutoTokenizer.from_pretrained(src)
    bert = AutoModel.from_pretrained(src).eval()
    pieces = tok(text.strip(), add_special_tokens=False)["input_ids"]
    room = length - 2 - (1 if prefix else 0)
    ids = [tok.cls_token_id] + ([tok.convert_tokens_to_ids(prefix)] if prefix else [])
    ids += [*pieces[:room], tok.sep_token_id]
    mask = [1] * len(ids)
    if is_query and expand:
        pad = length - len(ids)
        ids += [tok.mask_token_id] * pad
        mask += [1 if attend else 0] * pad
    with torch.no_grad():
        h = bert(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.tensor([mask]),
            token_type_ids=torch.zeros((1, len(ids)), dtype=torch.long),
        ).last_hidden_state[0]
        for weight, bias, act in dense:
            h = h @ weight.T + (0 if bias is None else bias)
            h = act(h) if act is not None else h
    if is_query and expand:
        keep = [True] * len(ids)
    else:
        skip = (
            set(tok.convert_tokens_to_ids(list(skip_words)))
            if (skip_words and not is_query)
            else set()
        )
        keep = [m == 1 and i not in skip for i, m in zip(ids, mask, strict=True)]
    h = h[torch.tensor(keep)]
    if normalize:
        h = torch.nn.functional.normalize(h, dim=1)
    return h.numpy()


def _compare(
    model,
    directory,
    dense,
    *,
    q_len,
    d_len,
    q_prefix="[Q] ",
    d_prefix="[D] ",
    expand=True,
    attend=False,
    skip=tuple(string.punctuation),
    transformer_dir=None,
    normalize=True,
):
    queries = model.encode_queries(TEXTS, batch_size=2)
    docs = model.encode_documents(TEXTS, batch_size=3)
    for text, q, d in zip(TEXTS, queries, docs, strict=True):
        eq = literal(
            directory,
            text,
            is_query=True,
            prefix=q_prefix,
            length=q_len,
            expand=expand,
            attend=attend,
            skip_words=skip,
            dense=dense,
            transformer_dir=transformer_dir,
            normalize=normalize,
        )
        ed = literal(
            directory,
            text,
            is_query=False,
            prefix=d_prefix,
            length=d_len,
            expand=expand,
            attend=attend,
            skip_words=skip,
            dense=dense,
            transformer_dir=transformer_dir,
            normalize=normalize,
        )
        assert q.shape == eq.shape and d.shape == ed.shape, text
        np.testing.assert_allclose(q, eq, atol=2e-5)
        np.testing.assert_allclose(d, ed, atol=2e-5)
    return queries, docs


def test_pylate_one_dense(tmp_path):
    states = pylate_model(tmp_path, n_dense=1)["states"]
    model = ColBERT(tmp_path, device="cpu")
    s = model.settings
    assert (s.layout, s.query_length, s.document_length, s.do_query_expansion) == (
        "pylate",
        12,
        20,
        True,
    )
    assert model.dimension == 24
    queries, docs = _compare(
        model, tmp_path, [(states[0]["linear.weight"], None, None)], q_len=12, d_len=20
    )
    assert {len(q) for q in queries} == {12}  # every query padded with [MASK] and kept
    assert len(docs[3]) == 20 and len(docs[2]) == 3  # truncated; "" -> [CLS] [D] [SEP]


def test_pylate_two_dense_with_bias_and_activation_and_attention_to_expansion(tmp_path):
    config = {"query_length": 10, "document_length": 15, "attend_to_expansion_tokens": True}
    states = pylate_model(tmp_path, n_dense=2, config=config)["states"]
    model = ColBERT(tmp_path, device="cpu")
    assert model.dimension == 16
    dense = [
        (states[0]["linear.weight"], states[0]["linear.bias"], torch.tanh),
        (states[1]["linear.weight"], None, None),
    ]
    # PyLate defaults fill the missing fields: prefixes, expansion, punctuation skiplist.
    _compare(model, tmp_path, dense, q_len=10, d_len=15, attend=True)


def test_missing_fields_take_pylate_defaults(tmp_path):
    pylate_model(tmp_path, n_dense=1, config={})
    s = ColBERT(tmp_path, device="cpu").settings
    assert (s.query_prefix, s.document_prefix, s.query_length, s.document_length) == (
        "[Q] ",
        "[D] ",
        32,
        180,
    )
    assert s.do_query_expansion is True and s.attend_to_expansion_tokens is False
    assert s.skiplist_words == tuple(string.punctuation)


def test_overrides_win_and_normalize_off(tmp_path):
    states = pylate_model(tmp_path, n_dense=1)["states"]
    model = ColBERT(
        tmp_path,
        device="cpu",
        query_length=8,
        document_length=9,
        do_query_expansion=False,
        skiplist_words=[],
        normalize=False,
    )
    _compare(
        model,
        tmp_path,
        [(states[0]["linear.weight"], None, None)],
        q_len=8,
        d_len=9,
        expand=False,
        skip=(),
        normalize=False,
    )


@pytest.mark.parametrize("sentence_transformers", [True, False], ids=["st-layout", "transformers"])
def test_plain_encoder_gives_token_states_as_they_are(tmp_path, sentence_transformers):
    plain_model(tmp_path, sentence_transformers)
    model = ColBERT(tmp_path, device="cpu")
    s = model.settings
    assert s.layout == "plain" and model.dimension == HIDDEN
    assert (s.query_prefix, s.document_prefix, s.do_query_expansion, s.skiplist_words) == (
        "",
        "",
        False,
        (),
    )
    assert s.document_length == 24  # sentence_bert_config's max_seq_length
    _compare(
        model, tmp_path, [], q_len=24, d_len=24, q_prefix="", d_prefix="", expand=False, skip=()
    )


def test_stanford_checkpoint(tmp_path):
    linear = stanford_model(tmp_path)
    model = ColBERT(tmp_path, device="cpu")
    s = model.settings
    assert s.layout == "stanford" and model.dimension == 16
    assert (s.query_prefix, s.document_prefix, s.query_length, s.document_length) == (
        "[unused0]",
        "[unused1]",
        10,
        16,
    )
    _compare(
        model,
        tmp_path,
        [(linear, None, None)],
        q_len=10,
        d_len=16,
        q_prefix="[unused0]",
        d_prefix="[unused1]",
    )


def test_batches_and_order_do_not_change_results(tmp_path):
    pylate_model(tmp_path, n_dense=1)
    model = ColBERT(tmp_path, device="cpu")
    one = model.encode_documents(TEXTS, batch_size=1)
    many = model.encode_documents(TEXTS, batch_size=64)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    tensors = model.encode_queries(TEXTS[:2], as_tensors=True)
    assert all(isinstance(t, torch.Tensor) for t in tensors)
    assert model.encode_documents([]) == []


def test_bad_input_and_bad_options(tmp_path, monkeypatch):
    pylate_model(tmp_path, n_dense=1)
    model = ColBERT(tmp_path, device="cpu")
    with pytest.raises(MuveraError, match="item 1 is int, not str"):
        model.encode_documents(["ok", 3])
    with pytest.raises(MuveraError, match="takes a list of strings"):
        model.encode_queries("a single string")
    with pytest.raises(MuveraError, match="batch_size"):
        model.encode_queries(["x"], batch_size=0)
    with pytest.raises(MuveraError, match="float16"):
        ColBERT(tmp_path, device="cpu", dtype="float16")
    with pytest.raises(MuveraError, match="dtype must be one of"):
        ColBERT(tmp_path, device="cpu", dtype="int8")
    with pytest.raises(MuveraError, match="is not a token"):
        ColBERT(tmp_path, device="cpu", query_prefix="[NOPE]")
    with pytest.raises(MuveraError, match="exceeds the model's 512 positions"):
        ColBERT(tmp_path, device="cpu", document_length=600)
    with pytest.raises(MuveraError, match="does not exist"):
        ColBERT(tmp_path / "missing", device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        MuveraError, match=r"neuml/colbert-muvera-micro.*local directory.*--local-dir"
    ):
        ColBERT("neuml/colbert-muvera-micro", device="cpu")


def test_custom_architecture_needs_trust_remote_code(tmp_path):
    from model_fixtures import custom_model

    custom_model(tmp_path)
    with pytest.raises(MuveraError, match="trust_remote_code=True"):
        ColBERT(tmp_path, device="cpu")
    model = ColBERT(tmp_path, device="cpu", trust_remote_code=True, normalize=False)
    assert type(model.model).__name__ == "TinyHashModel"
    # The custom forward doubles the hidden states; the Dense layer is linear, so the
    # unnormalised outputs are twice those of the same weights run as a plain BERT.
    doubled = model.encode_documents(["the cat sat"])[0]
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("auto_map",):
        cfg.pop(key)
    cfg["model_type"], cfg["architectures"] = "bert", ["BertModel"]
    cfg_path.write_text(json.dumps(cfg))
    plain = ColBERT(tmp_path, device="cpu", normalize=False).encode_documents(["the cat sat"])[0]
    np.testing.assert_allclose(doubled, 2 * plain, rtol=1e-4, atol=1e-5)


def test_progress_bar_is_opt_in(tmp_path, capsys):
    pylate_model(tmp_path, n_dense=1)
    model = ColBERT(tmp_path, device="cpu")
    model.encode_documents(TEXTS)
    assert "encode_documents" not in capsys.readouterr().err
    model.encode_documents(TEXTS, show_progress=True, batch_size=2)
    assert "encode_documents" in capsys.readouterr().err


def test_broken_checkpoint_gets_a_clear_error(tmp_path):
    pylate_model(tmp_path, n_dense=1)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(MuveraError, match="could not load"):
        ColBERT(tmp_path, device="cpu")
    (tmp_path / "modules.json").write_text("{not json")
    with pytest.raises(MuveraError, match="not valid JSON"):
        ColBERT(tmp_path, device="cpu")


def test_backend_tokenization_equals_transformers(tmp_path):
    """The Rust-backend fast path gives exactly what the transformers call gives."""
    from muvera.models.tokenizer import batch_encode

    pylate_model(tmp_path, n_dense=1)
    model = ColBERT(tmp_path, device="cpu")
    texts = ["the cat sat on the mat " * 9, "", "Hello, WORLD!", "one two", "ünïcödé dog"]
    for max_length, pad_to_max in ((11, False), (11, True), (64, False), (5, True)):
        fast = batch_encode(model.tokenizer, {}, texts, max_length, pad_to_max)
        slow = model.tokenizer(
            texts,
            padding="max_length" if pad_to_max else True,
            truncation="longest_first",
            max_length=max_length,
            return_tensors="pt",
        )
        assert set(fast) == {k for k in slow if k in fast}
        for key, value in fast.items():
            assert torch.equal(value, slow[key]), key
    if MODEL.is_dir():
        shared = ColBERT(MODEL, device="cpu")
        fast = batch_encode(shared.tokenizer, {}, texts, 31, False)
        slow = shared.tokenizer(texts, padding=True, truncation="longest_first", max_length=31,
                                return_tensors="pt")  # fmt: skip
        assert all(torch.equal(fast[k], slow[k]) for k in fast)


def _config_with(prompts: dict, default: str | None = None) -> dict:
    return {"query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 12,
            "document_length": 20, "do_query_expansion": False,
            "skiplist_words": list(string.punctuation), "prompts": prompts,
            "default_prompt_name": default}  # fmt: skip


def test_prompts_per_side_as_sentence_transformers_applies_them(tmp_path):
    """ColBERT-Zero's config: a "query" and a "document" prompt, no default. Each side gets
    its own (encode_query / encode_document's rule), prompt_name= and prompt= override it
    per call, and the result is the text with the prompt written in by hand."""
    zero = {"query": "search_query: ", "document": "search_document: "}
    pylate_model(tmp_path, n_dense=1, config=_config_with(zero))
    model = ColBERT(tmp_path, device="cpu")
    s = model.settings
    assert (s.query_prompt, s.document_prompt) == ("search_query: ", "search_document: ")
    texts = ["the cat sat", " leading and trailing  ", "one\ntwo"]

    def same(a, b):
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    same(model.encode_queries(texts), model.encode_queries(
        ["search_query: " + t for t in texts], prompt=""))  # fmt: skip
    same(model.encode_documents(texts), model.encode_documents(
        ["search_document: " + t for t in texts], prompt=""))  # fmt: skip
    same(model.encode_documents(texts, prompt_name="query"),
         model.encode_documents(["search_query: " + t for t in texts], prompt=""))  # fmt: skip
    bare = model.encode_queries(texts, prompt="")
    assert any(a.shape != b.shape or not np.array_equal(a, b)
               for a, b in zip(bare, model.encode_queries(texts), strict=True))  # fmt: skip
    with pytest.raises(MuveraError, match="not one of this model's prompts"):
        model.encode_queries(texts, prompt_name="passage")
    with pytest.raises(MuveraError, match="not both"):
        model.encode_queries(texts, prompt_name="query", prompt="x")
    # PyLate's encode(is_query=...): no side prompt unless asked (as PyLate 1.6's encode)
    same(model.encode(texts, is_query=True), bare)
    same(model.encode(texts, is_query=True, prompt_name="query"), model.encode_queries(texts))
    same(model.encode(texts, is_query=False, prompt_name="document"),
         model.encode_documents(texts))  # fmt: skip
    raw = model.encode_documents(texts, normalize=False)
    assert not np.allclose(np.linalg.norm(raw[0], axis=1), 1.0)
    for r, n in zip(raw, model.encode_documents(texts), strict=True):
        np.testing.assert_allclose(r / np.linalg.norm(r, axis=1, keepdims=True), n, atol=1e-6)


@pytest.mark.parametrize(
    ("prompts", "default", "query", "document"),
    [
        ({"query": "q: ", "passage": "p: "}, None, "q: ", "p: "),
        ({"corpus": "c: "}, None, "", "c: "),
        ({"both": "b: "}, "both", "b: ", "b: "),  # only a default: both sides
        ({"query": "q: ", "both": "b: "}, "both", "q: ", "b: "),
        ({}, None, "", ""),
    ],
)
def test_which_prompt_each_side_takes(tmp_path, prompts, default, query, document):
    pylate_model(tmp_path, n_dense=1, config=_config_with(prompts, default))
    s = ColBERT(tmp_path, device="cpu").settings
    assert (s.query_prompt, s.document_prompt) == (query, document)


def test_a_default_prompt_name_that_is_not_a_prompt_is_refused(tmp_path):
    pylate_model(tmp_path, n_dense=1, config=_config_with({"query": "q: "}, "missing"))
    with pytest.raises(MuveraError, match="default_prompt_name 'missing'"):
        ColBERT(tmp_path, device="cpu")
