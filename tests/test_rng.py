"""The RNG ports against the C++ standard, glibc, the golden building blocks and a scalar replay."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import numpy as np
import pytest
from reference import (
    ScalarMT19937,
    ams_matrix,
    scalar_bernoulli_half,
    scalar_uniform_int,
    simhash_matrix,
)

from muvera.fde.config import FDEConfig
from muvera.fde.matrices import draw_matrices
from muvera.fde.rng import MT19937, glibc_logf, normal_float, uniform_index_and_sign


def test_mt19937_10000th_output_is_the_standard_value():
    # [rand.predef]: the 10000th consecutive invocation of a default-constructed mt19937
    assert int(MT19937(5489).draw(10000)[-1]) == 4123659995


def test_mt19937_draws_match_scalar_across_twists():
    fast = MT19937(12345)
    slow = ScalarMT19937(12345)
    got = np.concatenate([fast.draw(7), fast.draw(1500), fast.draw(3)])
    assert got.tolist() == [slow() for _ in range(1510)]


def test_unread_returns_values_first():
    engine = MT19937(1)
    first = engine.draw(5)
    engine.unread(first[2:])
    assert engine.draw(3).tolist() == first[2:].tolist()


def test_golden_building_blocks(golden):
    assert np.array_equal(MT19937(42).draw(16), golden["mt19937_seed42_first16"])
    assert np.array_equal(normal_float(MT19937(42), 64), golden["normal_float_seed42_first64"])
    for D in (8, 128):
        for k in (3, 5):
            cfg = FDEConfig(dimension=D, num_repetitions=3, num_simhash_projections=k)
            assert np.array_equal(draw_matrices(cfg).simhash, golden[f"simhash_seed42_dim{D}_k{k}"])
        for p in (8, 16):
            cfg = FDEConfig(dimension=D, num_repetitions=3, projection_dimension=p)
            m = draw_matrices(cfg)
            dense = np.zeros((3, D, p), np.float32)
            for r in range(3):
                dense[r, np.arange(D), m.ams_indices[r]] = m.ams_signs[r]
            assert np.array_equal(dense, golden[f"ams_seed42_dim{D}_p{p}"])
    idx, sign = uniform_index_and_sign(MT19937(42), 5120, 128)
    out = np.zeros(128, np.float32)
    np.add.at(out, idx, sign * golden["countsketch_seed42_input"])
    np.testing.assert_allclose(out, golden["countsketch_seed42_final128"], rtol=1e-6)


def test_matrices_match_scalar_replay():
    cfg = FDEConfig(
        dimension=7, num_repetitions=2, num_simhash_projections=3, projection_dimension=5
    )
    m = draw_matrices(cfg)
    for r in range(2):
        assert np.array_equal(m.simhash[r], simhash_matrix(42 + r, 7, 3))
        dense = np.zeros((7, 5), np.float32)
        dense[np.arange(7), m.ams_indices[r]] = m.ams_signs[r]
        assert np.array_equal(dense, ams_matrix(42 + r, 7, 5))


@pytest.mark.parametrize("bound", [3, 1000, 3_000_000_000, 2**32 - 5])
def test_uniform_index_and_sign_matches_scalar_including_rejections(bound):
    n = 4000
    idx, sign = uniform_index_and_sign(MT19937(7), n, bound)
    gen = ScalarMT19937(7)
    expect = []
    for _ in range(n):
        i = scalar_uniform_int(gen, bound)
        expect.append((i, 1 if scalar_bernoulli_half(gen) else -1))
    assert list(zip(idx.tolist(), sign.tolist(), strict=True)) == expect
    if bound > 2**31:  # rejections happen often enough here to exercise the slow path
        threshold = ((1 << 32) - bound) % bound
        assert threshold > 0


def test_uniform_index_and_sign_rejects_bad_bound():
    with pytest.raises(ValueError, match="bound"):
        uniform_index_and_sign(MT19937(1), 3, 0)


def _libm_logf():
    name = ctypes.util.find_library("m")
    try:
        libm = ctypes.CDLL(name or "libm.so.6")
        fn = libm.logf
    except (OSError, AttributeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return fn


def test_glibc_logf_special_values():
    x = np.array([1.0, 0.5, 2.0, 1e-40, np.finfo(np.float32).max], dtype=np.float32)
    got = glibc_logf(x)
    np.testing.assert_allclose(got, np.log(x.astype(np.float64)), rtol=1e-6)
    assert got[0] == 0.0


def test_glibc_logf_is_bit_exact_against_the_system_libm():
    # glibc's logf (not a correctly rounded log) is what the reference links; other C
    # libraries round differently, so only glibc must agree bit for bit.
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the system C library is not glibc")
    logf = _libm_logf()
    if logf is None:
        pytest.skip("no C libm logf reachable through ctypes")
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.random(20000), rng.random(2000) * 1e-30, rng.random(2000) * 1e30, [1e-42, 3e-39]]
    ).astype(np.float32)
    x = x[x > 0]
    expect = np.array([logf(float(v)) for v in x], dtype=np.float32)
    got = glibc_logf(x)
    assert int((got.view(np.uint32) != expect.view(np.uint32)).sum()) == 0
    # and a correctly rounded log would not do: it differs on about 0.7% of inputs
    assert (np.log(x.astype(np.float64)).astype(np.float32) != expect).sum() > 0
