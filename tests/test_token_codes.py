"""Quantized token rows (muvera.token_codes): the stored layout, the error bound, the
compiled kernel equal to numpy on the decoded vectors for every CPU variant, and indexes
that keep int8 / int4 tokens (search, get, compaction, reopen, format version, bad files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import format_version, ragged
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from muvera import FDEConfig, Index, MuveraError, maxsim, native
from muvera.scoring import maxsim_pairs, maxsim_spans
from muvera.token_codes import (
    CODE_KINDS,
    QuantizedTokens,
    _encode_numpy,
    decode_rows,
    encode_rows,
    row_bytes,
    row_scales,
)

KINDS = ["int8", "int4"]
RUNNABLE = [v for v in native.VARIANTS if native.load_variant(v) is not None]


def test_the_stored_layout_literally():
    """Scale first (float32 little-endian), then the codes: int8 as signed bytes, int4 as
    nibbles code + 8, byte i = value i (low) and value ceil(d/2) + i (high), an odd
    dimension padded with code 0."""
    x = np.array([[7.0, -7.0, 1.0]], np.float32)
    four = encode_rows(x, "int4")
    assert four.tobytes() == np.float32(1.0).tobytes() + bytes([15 | (9 << 4), 1 | (8 << 4)])
    eight = encode_rows(np.array([[2.54, -1.27, 0.0]], np.float32), "int8")
    assert eight[0, 4:].view(np.int8).tolist() == [127, -64, 0]  # -63.5 rounds to even
    assert eight[0, :4].view("<f4")[0] == np.float32(np.float32(2.54) / np.float32(127))
    assert row_bytes("int8", 128) == 132 and row_bytes("int4", 128) == 68
    assert decode_rows(np.zeros((2, 6), np.uint8), "int4", 3).tolist() == [[-0.0] * 3] * 2
    with pytest.raises(MuveraError, match="token codes must be one of"):
        encode_rows(x, "int2")
    with pytest.raises(MuveraError, match="rows of 3 values"):
        decode_rows(np.zeros((1, 5), np.uint8), "int4", 3)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    x=arrays(
        np.float32,
        st.tuples(st.integers(0, 6), st.integers(1, 9)),
        elements=st.floats(-(2.0**100), 2.0**100, width=32, allow_subnormal=False),
    ),
)
def test_every_value_decodes_within_half_a_step(kind, x):
    top = 127 if kind == "int8" else 7
    back = decode_rows(encode_rows(x, kind), kind, x.shape[1])
    assert back.shape == x.shape and back.dtype == np.float32
    step = np.abs(x).max(axis=1, keepdims=True) / top if x.size else 0
    assert np.all(np.abs(back.astype(np.float64) - x) <= 0.5 * step * (1 + 1e-5) + 1e-37)
    assert np.all((back == 0) | (np.sign(back) == np.sign(x)))  # no value changes sign


def _compiled_codes(variant: str, x: np.ndarray, kind: str, threads: int) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty((x.shape[0], row_bytes(kind, x.shape[1])), np.uint8)
    kernel = native.load_variant(variant)
    kernel.token_codes(x, row_scales(x, kind), CODE_KINDS[kind][1], out, threads)
    return out


ALL_KINDS = ["int8", "int4", "residual2", "residual4lm"]


@pytest.mark.skipif(not RUNNABLE, reason="no compiled kernel here")
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_the_compiled_encoder_writes_the_reference_bytes(kind):
    """codes.c in every variant this CPU runs, on 1 and 3 threads = the numpy reference,
    byte for byte: odd and wide dimensions, rows of zeros and of -0.0, ties (x / s = k +
    0.5 rounds to even), huge and subnormal values, one huge value among small ones."""
    rng = np.random.default_rng(7)
    for d in (1, 2, 3, 4, 5, 7, 127, 128, 129, 131, 768):
        x = rng.standard_normal((40, d)).astype(np.float32) * rng.uniform(0, 3, (40, 1))
        x = x.astype(np.float32)
        x[0], x[1] = 0.0, -0.0
        x[2, 0], x[3] = 1e30, np.float32(1e-40)
        x[4] = np.resize(np.arange(-127, 128, dtype=np.float32) + 0.5, d)  # halves
        x[4, 0] = 127.0
        x[5] = np.resize(np.array([1.0, -1.0, 0.5, -0.5, 0.0], np.float32), d)  # 2-bit edges
        want = _encode_numpy(x, kind, row_scales(x, kind)).tobytes()
        for variant in RUNNABLE:
            for threads in (1, 3):
                got = _compiled_codes(variant, x, kind, threads)
                assert got.tobytes() == want, (variant, d, threads)
    assert encode_rows(x, kind).tobytes() == want  # the default path picks the kernel
    assert encode_rows(np.zeros((0, 5), np.float32), kind).shape == (0, row_bytes(kind, 5))


@pytest.mark.skipif(not RUNNABLE, reason="no compiled kernel here")
@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(ALL_KINDS),
    x=arrays(
        np.float32,
        st.tuples(st.integers(0, 6), st.integers(1, 70)),
        elements=st.floats(-(2.0**100), 2.0**100, width=32),
    ),
)
def test_compiled_and_numpy_codes_agree_on_any_finite_rows(kind, x):
    want = _encode_numpy(x, kind, row_scales(x, kind)).tobytes()
    for variant in RUNNABLE:
        assert _compiled_codes(variant, x, kind, 2).tobytes() == want, variant


def test_the_compiled_encoder_refuses_what_it_does_not_take():
    kernel = native.load()
    if kernel is None:
        pytest.skip("no compiled kernel here")
    x = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="muvera_token_codes"):
        kernel.token_codes(x, np.ones(2, np.float32), 4, np.empty((2, 5), np.uint8))
    with pytest.raises(ValueError, match="muvera_token_codes"):
        kernel.token_codes(x, np.ones(2, np.float32), 9, np.empty((2, 12), np.uint8))
    wide = np.ones((1, 5000), np.float32)  # wider than codes.c takes: numpy writes them
    assert (
        encode_rows(wide, "int8").tobytes()
        == _encode_numpy(wide, "int8", row_scales(wide, "int8")).tobytes()
    )


def _corpus(d: int, seed: int):
    rng = np.random.default_rng(seed)
    docs = ragged(rng, [0, 1, 7, 9, 33, 250, 3], d, unit=False)
    queries = ragged(rng, [1, 12, 0, 33, 70], d, unit=False)
    lengths = np.array([len(x) for x in docs])
    q_offsets = np.concatenate([[0], np.cumsum([len(q) for q in queries])])
    return docs, queries, lengths, np.concatenate(queries), q_offsets


@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("kind", [*KINDS, "residual4lm"])
@pytest.mark.parametrize("d", [5, 128])
def test_scoring_codes_is_scoring_the_decoded_vectors(monkeypatch, kind, d, centred):
    """maxsim_spans / maxsim_pairs on quantized rows (gaps and any span order, the compiled
    kernel and the numpy fallback; rows of differences from a centre or not) = MaxSim of
    the decoded float32 vectors."""
    docs, queries, lengths, q_all, q_offsets = _corpus(d, d)
    rows = encode_rows(np.concatenate([np.ones((2, d), np.float32), *docs]), kind)
    centre = np.random.default_rng(1).standard_normal(d).astype(np.float32) if centred else None
    matrix = QuantizedTokens(rows, kind, d, centre)
    offsets = 2 + np.cumsum(lengths) - lengths
    decoded = [matrix[o : o + n] for o, n in zip(offsets, lengths, strict=True)]
    want = maxsim(queries, decoded)
    order = np.random.default_rng(0).permutation(len(docs))
    for kernel in ("native", "numpy"):
        if kernel == "numpy":
            monkeypatch.setattr(native, "load", lambda: None)
        got = maxsim_spans(matrix, offsets[order], lengths[order], q_all, q_offsets)
        np.testing.assert_allclose(got, want[:, order], rtol=1e-5, atol=1e-4, err_msg=kernel)
        pq, pd = np.nonzero(np.ones(want.shape, bool))
        pairs = maxsim_pairs(matrix, offsets[pd], lengths[pd], pq, q_all, q_offsets)
        np.testing.assert_allclose(pairs, want[pq, pd], rtol=1e-5, atol=1e-4, err_msg=kernel)
    with pytest.raises(MuveraError, match="outside the token matrix"):
        maxsim_spans(matrix, np.array([len(rows) - 1]), np.array([2]), q_all, q_offsets)


@pytest.mark.skipif(len(RUNNABLE) < 2, reason="fewer than two variants run here")
@pytest.mark.parametrize("kind", [*KINDS, "residual4lm"])
def test_every_variant_scores_codes_alike(kind):
    docs, _, lengths, q_all, q_offsets = _corpus(96, 3)
    matrix = QuantizedTokens(encode_rows(np.concatenate(docs), kind), kind, 96)
    offsets = np.cumsum(lengths) - lengths
    decoded = matrix[0 : len(matrix)]
    want = maxsim_spans(decoded, offsets, lengths, q_all, q_offsets)
    for variant in RUNNABLE:
        out = np.empty(want.shape, np.float32)
        native.load_variant(variant).maxsim(matrix, offsets, lengths, q_all, q_offsets, out, 2)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4, err_msg=variant)


CONFIG = FDEConfig(dimension=16, num_repetitions=4, num_simhash_projections=3, seed=5)


@pytest.mark.parametrize("store", ["exact", "hnswlib"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_index_with_quantized_tokens(tmp_path, store, kind, maxsim_kernel):
    """Exact search over every document = MaxSim of the decoded tokens; get() returns them;
    deletes + compaction keep the surviving rows byte for byte; reopening reads the same;
    the format version says the index needs a reader that knows codes."""
    rng = np.random.default_rng(1)
    docs = ragged(rng, [int(n) for n in rng.integers(1, 40, 60)], 16)
    queries = ragged(rng, [5, 9, 16], 16)
    path = tmp_path / "idx"
    with Index.create(path, CONFIG, store=store, token_dtype=kind, calibration="off") as index:
        index.add(list(range(60)), docs)
        assert index.manifest["format_version"] == format_version(index.manifest, 4)
        assert index.token_dtype == np.int8
        decoded = [index.get([i])[0].tokens for i in range(60)]
        centre = index.store.centre  # the first add's mean token
        np.testing.assert_allclose(centre, np.concatenate(docs).mean(axis=0), atol=1e-6)
        assert index.manifest["tokens"]["centre"] == [float(v) for v in centre]
        for doc, back in zip(docs, decoded, strict=True):
            diff = doc - centre
            step = np.abs(diff).max(axis=1, keepdims=True) / (127 if kind == "int8" else 7)
            assert np.all(np.abs(back - doc) <= 0.5 * step + 1e-6)
        want = maxsim(queries, decoded)
        exact = index.search_exact(queries, k=5)
        np.testing.assert_allclose(exact.scores, -np.sort(-want, axis=1)[:, :5], rtol=1e-5)
        two_stage = index.search(queries, k=5, candidates=60)
        np.testing.assert_allclose(two_stage.scores, exact.scores, rtol=1e-5)
        index.delete(list(range(0, 60, 2)))
        index.compact()
        survivors = [index.get([i])[0].tokens for i in range(1, 60, 2)]
        for a, b in zip(survivors, decoded[1::2], strict=True):
            np.testing.assert_array_equal(a, b)  # copied, not re-quantized
        after = index.search_exact(queries, k=5)
    with Index.open(path, mode="r") as index:
        again = index.search_exact(queries, k=5)
        assert again.ids.tolist() == after.ids.tolist()
        np.testing.assert_array_equal(again.scores, after.scores)


def test_the_centre_keeps_a_shared_component_from_eating_the_levels(tmp_path, maxsim_kernel):
    """Tokens sharing a large component (3x a fixed unit vector, renormalised): int4 codes
    of the differences from the centre decode far closer than codes of the tokens, and
    scores over them (kernel: differences + one <q, centre> per query token) equal MaxSim
    of the decoded vectors."""
    rng = np.random.default_rng(4)
    u = rng.standard_normal(16).astype(np.float32)
    u *= 3 / np.linalg.norm(u)
    docs = [x + u for x in ragged(rng, [int(n) for n in rng.integers(5, 30, 80)], 16)]
    docs = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in docs]
    queries = [q / np.linalg.norm(q, axis=1, keepdims=True) for q in
               (x + u for x in ragged(rng, [4, 9], 16))]  # fmt: skip
    with Index.create(tmp_path / "ix", CONFIG, store="exact", token_dtype="int4") as index:
        index.add(list(range(80)), docs)
        stored = [index.tokens(i) for i in range(80)]
        plain = [decode_rows(encode_rows(x, "int4"), "int4", 16) for x in docs]
        err_centred = np.mean([np.abs(a - b).mean() for a, b in zip(stored, docs, strict=True)])
        err_plain = np.mean([np.abs(a - b).mean() for a, b in zip(plain, docs, strict=True)])
        assert err_centred < 0.4 * err_plain
        want = maxsim(queries, stored)
        got = index.search_exact(queries, k=80)
        for i in range(2):
            np.testing.assert_allclose(got.scores[i], np.sort(want[i])[::-1], rtol=1e-5, atol=1e-5)
        assert set(got.ids[0, :5].tolist()) == set(np.argsort(-want[0])[:5].tolist())


@pytest.mark.parametrize("centre", [None, [0.0] * 15, [0.0] * 15 + ["x"], [1e39] * 16, "0"])
def test_a_bad_centre_is_refused(tmp_path, centre):
    rng = np.random.default_rng(2)
    path = tmp_path / "idx"
    with Index.create(path, CONFIG, store="exact", token_dtype="int8") as index:
        index.add(["a", "b"], ragged(rng, [3, 4], 16))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["tokens"]["centre"] = centre
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MuveraError, match="centre must be 16 finite numbers"):
        Index.open(path, mode="r")


def test_quantized_tokens_refused_where_they_cannot_be_kept(tmp_path):
    with pytest.raises(MuveraError, match="token_dtype must be one of"):
        Index.create(tmp_path / "a", CONFIG, store="exact", token_dtype="int2")
    pytest.importorskip("qdrant_client")
    with pytest.raises(MuveraError, match="keeps float16 tokens"):
        Index.create(tmp_path / "b", CONFIG, store="qdrant", token_dtype="int8",
                     store_options={"location": ":memory:"})  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_a_token_file_of_partial_rows_is_refused(tmp_path, kind):
    rng = np.random.default_rng(2)
    path = tmp_path / "idx"
    with Index.create(path, CONFIG, store="exact", token_dtype=kind) as index:
        index.add(["a", "b"], ragged(rng, [3, 4], 16))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["tokens"]["bytes"] -= 1  # a float16 row size, not a code row
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MuveraError, match="not whole token rows"):
        Index.open(path, mode="r")
    manifest["tokens"]["bytes"] += 1 - row_bytes(kind, 16)  # one row short: spans run past
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MuveraError, match="run past the end"):
        Index.open(path, mode="r")
