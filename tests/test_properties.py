"""Mathematical properties of FDEs, checked with hypothesis on random inputs."""

from __future__ import annotations

from functools import cache

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from muvera import FDEConfig, FDEEncoder, maxsim

SETTINGS = settings(max_examples=40, deadline=None)


@cache
def encoder(
    d: int,
    R: int,
    k: int,
    projection: str,
    fill: bool,
    final: int | None = None,
    kernel: str = "auto",
) -> FDEEncoder:
    return FDEEncoder(
        FDEConfig(
            dimension=d,
            num_repetitions=R,
            num_simhash_projections=k,
            projection_type=projection,
            fill_empty_partitions=fill,
            final_projection_dimension=final,
        ),
        kernel=kernel,
    )


@st.composite
def clouds(draw, max_tokens=12, d=6):
    n = draw(st.integers(1, max_tokens))
    seed = draw(st.integers(0, 2**32 - 1))
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@SETTINGS
@given(
    a=clouds(),
    b=clouds(),
    k=st.integers(0, 4),
    projection=st.sampled_from(["identity", "ams_sketch"]),
    final=st.sampled_from([None, 64]),
)
def test_query_fde_is_linear_in_disjoint_token_sets(a, b, k, projection, final, kernel):
    enc = encoder(6, 3, k, projection, False, final, kernel)
    whole, parts = enc.encode_queries([np.concatenate([a, b]), a, b]), None
    parts = whole[1] + whole[2]
    np.testing.assert_allclose(whole[0], parts, atol=1e-5)


@SETTINGS
@given(x=clouds(), k=st.integers(0, 4), seed=st.integers(0, 1000))
def test_query_fde_ignores_token_order(x, k, seed, kernel):
    enc = encoder(6, 3, k, "ams_sketch", False, kernel=kernel)
    perm = np.random.default_rng(seed).permutation(len(x))
    got = enc.encode_queries([x, x[perm]])
    np.testing.assert_allclose(got[0], got[1], atol=1e-5)
    means = encoder(6, 3, k, "ams_sketch", False, kernel=kernel)  # documents: means, no fill
    docs = means.encode_documents([x, x[perm]])
    np.testing.assert_allclose(docs[0], docs[1], atol=1e-5)


@SETTINGS
@given(q=clouds(), doc=clouds(max_tokens=20), k=st.integers(0, 4))
def test_fde_inner_product_lower_bounds_maxsim_with_identity_and_filling(q, doc, k, kernel):
    R = 4
    enc = encoder(6, R, k, "identity", True, kernel=kernel)
    fq, fd = enc.encode_queries([q])[0], enc.encode_documents([doc])[0]
    exact = maxsim([q], [doc])[0, 0]
    assert float(fq @ fd) / R <= exact + 1e-4


@SETTINGS
@given(q=clouds(), token=clouds(max_tokens=1), k=st.integers(0, 4))
def test_one_token_document_with_filling_scores_exactly_maxsim(q, token, k, kernel):
    R = 3
    enc = encoder(6, R, k, "identity", True, kernel=kernel)
    fq, fd = enc.encode_queries([q])[0], enc.encode_documents([token])[0]
    np.testing.assert_allclose(float(fq @ fd) / R, maxsim([q], [token])[0, 0], atol=1e-5)


@SETTINGS
@given(x=clouds())
def test_zero_projections_give_copies_of_sum_and_mean(x, kernel):
    R = 3
    enc = encoder(6, R, 0, "identity", False, kernel=kernel)
    np.testing.assert_allclose(enc.encode_queries([x])[0], np.tile(x.sum(0), R), atol=1e-5)
    np.testing.assert_allclose(enc.encode_documents([x])[0], np.tile(x.mean(0), R), atol=1e-5)
