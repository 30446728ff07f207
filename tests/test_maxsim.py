from __future__ import annotations

import numpy as np
import pytest
from helpers import pad, ragged
from reference import reference_maxsim

import muvera.scoring
from muvera import MuveraError, maxsim


def test_hand_worked_example(maxsim_kernel):
    q = [np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), np.zeros((0, 2), np.float32)]
    d = [
        np.array([[1.0, 0.0]], np.float32),
        np.array([[0.5, 0.5], [0.0, 2.0]], np.float32),
        np.zeros((0, 2), np.float32),
    ]
    got = maxsim(q, d)
    assert got.dtype == np.float32 and got.shape == (2, 3)
    assert got[0].tolist() == [1.0, 2.5, float("-inf")]  # empty document: -inf
    assert got[1].tolist() == [0.0, 0.0, 0.0]  # empty query: 0


@pytest.mark.parametrize("block", [1, 50, 1 << 24])
def test_matches_reference_in_any_block_size(monkeypatch, block, maxsim_kernel):
    monkeypatch.setattr(muvera.scoring, "_BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(0)
    queries = ragged(rng, [3, 1, 7], 16, unit=False)
    docs = ragged(rng, [5, 1, 0, 12, 2], 16, unit=False)
    got = maxsim(queries, docs)
    expect = np.array([[reference_maxsim(q, d) for d in docs] for q in queries])
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)


def test_padded_inputs_mask_padding_with_minus_inf_semantics(maxsim_kernel):
    rng = np.random.default_rng(1)
    queries = ragged(rng, [3, 2], 8)
    docs = ragged(rng, [4, 1, 6], 8)
    expect = maxsim(queries, docs)
    # Negative-similarity documents: multiplying padding by a 0 mask would wrongly win
    # the max with 0; big padding values would win too. Neither may happen.
    qp, ql = pad(queries, 8, fill=100.0)
    dp, dl = pad([-x for x in docs], 8, fill=100.0)
    got = maxsim(qp, dp, query_lengths=ql, document_lengths=dl)
    np.testing.assert_allclose(got, maxsim(queries, [-x for x in docs]), atol=1e-5)
    assert (got < 0).any()
    dmask = np.arange(dp.shape[1])[None, :] < dl[:, None]
    dp2, _ = pad(docs, 8, fill=-50.0)
    np.testing.assert_allclose(maxsim(queries, dp2, document_mask=dmask), expect, atol=1e-5)


def test_bad_input():
    q = [np.ones((2, 4), np.float32)]
    with pytest.raises(MuveraError, match="dimension 4, document tokens 3"):
        maxsim(q, [np.ones((2, 3), np.float32)])
    with pytest.raises(MuveraError, match="NaN"):
        maxsim(q, [np.ones((2, 4), np.float32), np.full((1, 4), np.nan, np.float32)])
    with pytest.raises(MuveraError, match="list of arrays"):
        maxsim(q, 5)
    assert maxsim([], [np.ones((2, 4), np.float32)]).shape == (0, 1)
