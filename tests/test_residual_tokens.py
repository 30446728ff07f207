"""Token dtypes "residual4", "residual4lm" and "residual2": int4 / Lloyd-Max 4-bit / 2-bit
codes of each token's difference from its token cell's centroid (PLAID's residual
compression). Decoding against a literal reference, every kernel variant and numpy against
the decoded vectors, damaged labels, the index that switches to residuals when its cells
are fitted (compaction, reopening, format version, bad manifests), and fidelity against
int4 on the same tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import format_version, ragged

from muvera import FDEConfig, Index, MuveraError, maxsim, native
from muvera.cells import MIN_FIT_TOKENS
from muvera.index.info import describe
from muvera.scoring import maxsim_pairs, maxsim_spans
from muvera.token_codes import QuantizedTokens, encode_rows

RUNNABLE = [v for v in native.VARIANTS if native.load_variant(v) is not None]
CONFIG = FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2, seed=5)


KINDS = ["residual4", "residual4lm", "residual2"]
# the 16 levels of residual4lm, as the docstring of muvera.token_codes gives them
LM_HALF = [0.12839, 0.38814, 0.65680, 0.94245, 1.25623, 1.61812, 2.06890, 2.73257]
LM_LITERAL = [-v for v in reversed(LM_HALF)] + LM_HALF


def _literal_values(row, kind: str, d: int) -> list[float]:
    """One stored row decoded value by value, as token_codes.py's docstring says."""
    scale = float(np.asarray(row[:4]).copy().view("<f4")[0])
    packed = [int(b) for b in row[4:]]
    if kind == "residual4":  # value i in byte i's low nibble, value h + i in its high one
        nibbles = [b & 15 for b in packed] + [b >> 4 for b in packed]
        return [scale * (c - 8) for c in nibbles[:d]]
    if kind == "residual4lm":  # the same nibbles, each decoding to its Lloyd-Max level
        nibbles = [b & 15 for b in packed] + [b >> 4 for b in packed]
        return [scale * LM_LITERAL[c] for c in nibbles[:d]]
    quarter = len(packed)  # residual2: values i, q + i, 2q + i, 3q + i from the low bits up
    codes = [(packed[i % quarter] >> (2 * (i // quarter))) & 3 for i in range(d)]
    return [scale * (c - 1.5) for c in codes]


def _residual_matrix(seed: int, d: int, n_rows: int, n_bases: int, first: int, kind: str):
    """Stored residual rows, their labels and bases, and the literal decoding of each row:
    scale * code (+ bases[label] from row ``first`` on) + centre."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, d)).astype(np.float32)
    bases = rng.standard_normal((n_bases, d)).astype(np.float32)
    labels = rng.integers(0, n_bases, n_rows).astype(np.uint16)
    centre = rng.standard_normal(d).astype(np.float32)
    rows = encode_rows(x, kind)
    literal = np.empty((n_rows, d), np.float32)
    for r in range(n_rows):
        literal[r] = _literal_values(rows[r], kind, d)
        if r >= first:
            literal[r] += bases[labels[r]]
        literal[r] += centre
    matrix = QuantizedTokens(rows, kind, d, centre, (bases, labels, first))
    return matrix, literal, x, labels, bases


@pytest.mark.parametrize("d", [1, 3, 4, 5, 9, 128])
def test_2bit_codes_are_the_least_squares_levels_of_gaussian_values(d):
    """The step is 0.9957 x the row's RMS (Max's optimum for Gaussian values), each value
    takes the level of its interval, and the relative squared error of Gaussian rows is
    that of the optimum (0.1188) within sampling noise."""
    rng = np.random.default_rng(d)
    x = rng.standard_normal((400, d)).astype(np.float32)
    rows = encode_rows(x, "residual2")
    scale = rows[:, :4].copy().view("<f4").ravel()
    np.testing.assert_allclose(scale, 0.9957 * np.sqrt((x * x).mean(axis=1)), rtol=1e-5)
    decoded = QuantizedTokens(rows, "residual2", d)[0:400]
    want = np.clip(np.floor(x / scale[:, None]) + 2, 0, 3) - 1.5
    np.testing.assert_allclose(decoded, want * scale[:, None], rtol=1e-6, atol=1e-7)
    if d == 128:
        error = float(((decoded - x) ** 2).sum() / (x * x).sum())
        assert 0.10 < error < 0.13, error
    zeros = QuantizedTokens(encode_rows(np.zeros((2, d), np.float32), "residual2"), "residual2", d)
    assert not zeros[0:2].any()


@pytest.mark.parametrize("d", [1, 2, 5, 9, 128])
def test_lloyd_max_codes_pick_the_scale_of_least_squared_error(d):
    """residual4lm literally: for each row, each multiplier m of 0.80 .. 1.15 gives a scale
    rms x m and codes (the level nearest to x / scale); the stored scale is the first m of
    least squared error, and the codes are those of that scale. The relative squared
    error of Gaussian rows is below Max's 16-level optimum (0.0095: the scale fits each
    row) and far below residual4's."""
    rng = np.random.default_rng(d)
    x = rng.standard_normal((300, d)).astype(np.float32) * rng.uniform(0.01, 9, (300, 1))
    x = x.astype(np.float32)
    rows = encode_rows(x, "residual4lm")
    levels = np.array(LM_LITERAL, np.float64)
    for r in range(0, 300, 7):
        v = x[r].astype(np.float64)
        rms = float(np.sqrt((v * v).mean()))
        errors, scales = [], []
        for m in (0.80, 0.85, 0.90, 0.95, 1.00, 1.05, 1.10, 1.15):
            s = float(np.float32(rms * float(np.float32(m))))
            nearest = levels[np.abs(v[:, None] / s - levels[None, :]).argmin(axis=1)]
            errors.append(float(((v - s * nearest) ** 2).sum()))
            scales.append(s)
        scale = float(rows[r, :4].copy().view("<f4")[0])
        best = int(np.argmin(errors))
        assert scale == pytest.approx(scales[best], rel=1e-6), (r, errors)
        np.testing.assert_allclose(_literal_values(rows[r], "residual4lm", d),
                                   scale * levels[np.abs(v[:, None] / scale - levels).argmin(1)],
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
    if d == 128:
        decoded = QuantizedTokens(rows, "residual4lm", d)[0:300]
        error = float((((decoded - x) ** 2).sum(axis=1) / (x * x).sum(axis=1)).mean())
        four = QuantizedTokens(encode_rows(x, "residual4"), "residual4", d)[0:300]
        plain = float((((four - x) ** 2).sum(axis=1) / (x * x).sum(axis=1)).mean())
        assert 0.006 < error < 0.0095 and error < 0.65 * plain, (error, plain)
    zeros = encode_rows(np.zeros((2, d), np.float32), "residual4lm")
    assert not QuantizedTokens(zeros, "residual4lm", d)[0:2].any()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("d", [5, 128])
def test_residual_rows_decode_as_written(d, kind):
    matrix, literal, _, _, _ = _residual_matrix(0, d, 50, 7, 23, kind)
    np.testing.assert_allclose(matrix[0:50], literal, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(matrix[10:30], literal[10:30], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(matrix[30:40], literal[30:40], rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError):
        matrix[0:50:2]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("d", [5, 128])
def test_scoring_residual_rows_is_scoring_the_decoded_vectors(monkeypatch, d, kind):
    matrix, literal, _, _, _ = _residual_matrix(1, d, 300, 9, 111, kind)  # first in a span
    rng = np.random.default_rng(2)
    lengths = rng.integers(0, 25, 14).astype(np.int64)
    offsets = np.minimum(rng.integers(0, 300, 14), 300 - lengths).astype(np.int64)
    queries = ragged(rng, [3, 17, 40], d)
    q_all = np.concatenate(queries)
    q_offsets = np.array([0, 3, 20, 60], np.int64)
    want = maxsim(queries, [literal[o : o + n] for o, n in zip(offsets, lengths, strict=True)])
    for kernel in ("native", "numpy"):
        if kernel == "numpy":
            monkeypatch.setattr(native, "load", lambda: None)
        got = maxsim_spans(matrix, offsets, lengths, q_all, q_offsets)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=kernel)
        pq, pd = np.nonzero(np.ones(want.shape, bool))
        pairs = maxsim_pairs(matrix, offsets[pd], lengths[pd], pq, q_all, q_offsets)
        np.testing.assert_allclose(pairs, want[pq, pd], rtol=1e-5, atol=1e-4, err_msg=kernel)


@pytest.mark.skipif(not RUNNABLE, reason="no compiled variant runs here")
@pytest.mark.parametrize(
    ("kind", "d"),
    [
        ("residual4", 96),
        ("residual4lm", 96),
        ("residual4lm", 39),
        ("residual2", 96),
        ("residual2", 7),
    ],
)
def test_every_variant_scores_residual_rows_alike(kind, d):
    matrix, literal, _, _, _ = _residual_matrix(3, d, 400, 33, 150, kind)
    lengths = np.full(16, 25, np.int64)
    offsets = np.arange(16, dtype=np.int64) * 25
    rng = np.random.default_rng(4)
    q_all = rng.standard_normal((40, d)).astype(np.float32)
    q_offsets = np.array([0, 7, 40], np.int64)
    want = maxsim_spans(literal, offsets, lengths, q_all, q_offsets)
    for variant in RUNNABLE:
        out = np.empty(want.shape, np.float32)
        status = native.load_variant(variant).maxsim(
            matrix, offsets, lengths, q_all, q_offsets, out, 2
        )
        assert status == 0
        centre = np.add.reduceat(q_all @ matrix.centre, q_offsets[:-1])  # added by scoring
        np.testing.assert_allclose(out + centre[:, None], want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kernel", ["native", "numpy"])
def test_damaged_labels_raise(monkeypatch, kernel):
    if kernel == "numpy":
        monkeypatch.setattr(native, "load", lambda: None)
    matrix, _, _, labels, bases = _residual_matrix(5, 16, 60, 4, 20, "residual4")
    q = np.ones((3, 16), np.float32)
    qo = np.array([0, 3], np.int64)
    bad = labels.copy()
    bad[40] = 4  # one past the bases
    damaged = QuantizedTokens(matrix.rows, "residual4", 16, matrix.centre, (bases, bad, 20))
    with pytest.raises(MuveraError, match="out of range"):
        maxsim_spans(damaged, np.array([30]), np.array([20]), q, qo)
    # a label before the first residual row is never read
    early = labels.copy()
    early[5] = 999
    fine = QuantizedTokens(matrix.rows, "residual4", 16, matrix.centre, (bases, early, 20))
    np.testing.assert_allclose(
        maxsim_spans(fine, np.array([0]), np.array([20]), q, qo),
        maxsim_spans(matrix, np.array([0]), np.array([20]), q, qo),
    )
    short = QuantizedTokens(matrix.rows, "residual4", 16, matrix.centre, (bases, labels[:50], 20))
    with pytest.raises(MuveraError):
        maxsim_spans(short, np.array([40]), np.array([20]), q, qo)


def _corpus(seed=0, n=500):
    """A shared component plus clustered tokens: enough rows to fit the cells."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, 8)).astype(np.float32)
    docs = []
    for _ in range(n):
        k = int(rng.integers(50, 90))
        t = centres[rng.integers(0, 40, k)] + 0.3 * rng.standard_normal((k, 8))
        docs.append((t + 3.0).astype(np.float32))
    assert sum(map(len, docs)) > MIN_FIT_TOKENS
    return rng, docs


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("store", ["exact", "hnswlib"])
def test_an_index_switches_to_residuals_when_its_cells_are_fitted(
    tmp_path, store, maxsim_kernel, kind
):
    _, docs = _corpus()
    queries = [docs[i][:12] + 0.05 for i in range(0, 500, 25)]
    path = tmp_path / "ix"
    with Index.create(path, CONFIG, store=store, token_dtype=kind) as index:
        index.add(list(range(100)), docs[:100])  # too few tokens: no cells, int4 rows
        assert "residual_from" not in _manifest(path)["tokens"]
        early = (path / "tokens.bin").read_bytes()
        index.add(list(range(100, 500)), docs[100:])
        tokens = _manifest(path)["tokens"]
        first = sum(map(len, docs[:100]))
        assert tokens["residual_from"] == first and tokens["cells"]
        want = {"residual4": 6, "residual2": 8, "residual4lm": 10}[kind]  # format versions
        assert index.manifest["format_version"] == format_version(index.manifest, want)
        assert f"token rows from {first:,} on are residuals" in describe(index)["token_cells"]
        assert (path / "tokens.bin").read_bytes()[: len(early)] == early  # append-only
        stored = [index.store.tokens(i) for i in range(500)]
        # mean error of the rows stored as residuals
        err = np.mean([np.abs(s - d).mean() for s, d in zip(stored[100:], docs[100:], strict=True)])
        exact = index.search_exact(queries, k=10)
        want = maxsim(queries, stored)
        np.testing.assert_allclose(
            exact.scores, -np.sort(-want, axis=1)[:, :10], rtol=1e-5, atol=1e-4
        )
        index.delete(list(range(0, 500, 2)))
        index.compact()
        tokens = _manifest(path)["tokens"]
        assert tokens["residual_from"] == sum(map(len, docs[1:100:2]))
        after = index.search_exact(queries, k=10)
        for i in range(1, 500, 2):
            np.testing.assert_array_equal(index.store.tokens(index._labels([i])[0]), stored[i])
    with Index.open(path, mode="r") as index:
        again = index.search_exact(queries, k=10)
        assert again.ids.tolist() == after.ids.tolist()
        np.testing.assert_array_equal(again.scores, after.scores)
    # int4 codes of the differences from the centre: larger errors than residuals of
    # either width (residual2 has half of int4's bits)
    with Index.create(tmp_path / "int4", CONFIG, store=store, token_dtype="int4") as index:
        index.add(list(range(500)), docs)
        plain = np.mean([np.abs(index.store.tokens(i) - docs[i]).mean() for i in range(100, 500)])
    assert err < (0.9 if kind == "residual2" else 0.6) * plain, (err, plain)


@pytest.mark.parametrize("kind", KINDS)
def test_residuals_need_token_cells_and_a_local_store(tmp_path, kind):
    with pytest.raises(MuveraError, match="token cells"):
        Index.create(tmp_path / "a", CONFIG, "exact", token_dtype=kind,
                     store_options={"token_cells": False})  # fmt: skip
    with pytest.raises(MuveraError, match=kind):
        Index.create(tmp_path / "b", CONFIG, "qdrant", token_dtype=kind,
                     store_options={"location": ":memory:"})  # fmt: skip


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t: t.pop("residual_from"), "residual_from"),
        (lambda t: t.update(residual_from=-1), "residual_from"),
        (lambda t: t.update(residual_from=10**9), "residual_from"),
        (lambda t: t.update(residual_from=True), "residual_from"),
        (lambda t: t.update(residual_from="0"), "residual_from"),
        (lambda t: t.update(dtype="int4"), "residual_from"),
        (lambda t: t.pop("centre"), "centre"),
        (lambda t: t.update(cells={}), "residual_from"),
    ],
)
def test_a_bad_token_section_is_refused(tmp_path, change, match):
    _, docs = _corpus(1, 500)
    path = tmp_path / "ix"
    with Index.create(path, CONFIG, "exact", token_dtype="residual4") as index:
        index.add(list(range(500)), docs)
    manifest = _manifest(path)
    change(manifest["tokens"])
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MuveraError, match=match):
        Index.open(path, mode="r")


def test_a_damaged_cell_file_cannot_crash_the_rerank(tmp_path, maxsim_kernel):
    _, docs = _corpus(2, 500)
    path = tmp_path / "ix"
    with Index.create(path, CONFIG, "exact", token_dtype="residual4") as index:
        index.add(list(range(500)), docs)
        cells = _manifest(path)["tokens"]["cells"]
        first = _manifest(path)["tokens"]["residual_from"]
    data = bytearray((path / cells["file"]).read_bytes())
    data[2 * first : 2 * first + 2] = (65_535).to_bytes(2, "little")  # no such cell
    (path / cells["file"]).write_bytes(bytes(data))
    with Index.open(path, mode="r") as index, pytest.raises(MuveraError, match="out of range"):
        index.search_exact([docs[0][:5]], k=3)
