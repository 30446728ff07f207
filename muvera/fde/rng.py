"""Bit-exact numpy ports of the random draws the C++ reference makes.

The MUVERA reference (google/graph-mining, ``fixed_dimensional_encoding.cc``) draws its
random matrices from ``std::mt19937`` through GNU libstdc++'s distributions, and the
Gaussian draws go through glibc's ``logf``. This module reproduces those draws exactly so
that an :class:`~muvera.FDEEncoder` built from a config gives the reference's FDEs.

Only construction uses this module (a few thousand draws per matrix); encoding never does.
Every function is vectorised where the draw pattern allows, with an exact sequential
fallback where rejection sampling could change how many raw draws an item consumes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "MT19937",
    "glibc_logf",
    "normal_float",
    "uniform_index_and_sign",
]

_N = 624
_M = 397
_MATRIX_A = np.uint32(0x9908B0DF)
_UPPER = np.uint32(0x80000000)
_LOWER = np.uint32(0x7FFFFFFF)


class MT19937:
    """The 32-bit Mersenne Twister, seeded exactly like ``std::mt19937(seed)``.

    Parameters
    ----------
    seed : int
        Reduced modulo 2**32, as the C++ engine's ``result_type`` conversion does.

    Examples
    --------
    >>> MT19937(5489).draw(2).tolist()  # the C++ standard's default-seed outputs
    [3499211612, 581869302]
    """

    def __init__(self, seed: int) -> None:
        state = [0] * _N
        state[0] = int(seed) & 0xFFFFFFFF
        for i in range(1, _N):
            prev = state[i - 1]
            state[i] = (1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF
        self._state = np.array(state, dtype=np.uint32)
        self._buffer = np.empty(0, dtype=np.uint32)

    def _twist(self) -> None:
        mt = self._state
        # new[i] depends on old[i + 1] (new[0] for the last i) and on new-or-old
        # [i + 397 mod 624]; within each of these four slices every dependency is final.
        for lo, hi in (
            (0, _N - _M),
            (_N - _M, 2 * (_N - _M)),
            (2 * (_N - _M), _N - 1),
            (_N - 1, _N),
        ):
            idx = np.arange(lo, hi)
            y = (mt[lo:hi] & _UPPER) | (mt[(idx + 1) % _N] & _LOWER)
            mag = np.where((y & np.uint32(1)) != 0, _MATRIX_A, np.uint32(0)).astype(np.uint32)
            mt[lo:hi] = mt[(idx + _M) % _N] ^ (y >> np.uint32(1)) ^ mag

    def _next_block(self) -> npt.NDArray[np.uint32]:
        self._twist()
        y = self._state.copy()
        y ^= y >> np.uint32(11)
        y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
        y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
        y ^= y >> np.uint32(18)
        return y

    def draw(self, n: int) -> npt.NDArray[np.uint32]:
        """Return the next ``n`` raw 32-bit outputs, shape ``(n,)``, dtype uint32."""
        parts = [self._buffer]
        have = self._buffer.size
        while have < n:
            block = self._next_block()
            parts.append(block)
            have += block.size
        out = np.concatenate(parts)
        self._buffer = out[n:]
        return out[:n]

    def unread(self, values: npt.NDArray[np.uint32]) -> None:
        """Put drawn-but-unused outputs back, so the next :meth:`draw` returns them first."""
        self._buffer = np.concatenate([np.asarray(values, dtype=np.uint32), self._buffer])


# glibc logf (sysdeps/ieee754/flt-32/e_logf.c, the Arm optimized-routines algorithm):
# 16-entry table of (1/c, log c) and a degree-3 polynomial for log1p, evaluated in double.
_LOGF_INVC = np.array(
    [float.fromhex(h) for h in (
        "0x1.661ec79f8f3bep+0", "0x1.571ed4aaf883dp+0", "0x1.49539f0f010bp+0",
        "0x1.3c995b0b80385p+0", "0x1.30d190c8864a5p+0", "0x1.25e227b0b8eap+0",
        "0x1.1bb4a4a1a343fp+0", "0x1.12358f08ae5bap+0", "0x1.0953f419900a7p+0",
        "0x1p+0", "0x1.e608cfd9a47acp-1", "0x1.ca4b31f026aap-1",
        "0x1.b2036576afce6p-1", "0x1.9c2d163a1aa2dp-1", "0x1.886e6037841edp-1",
        "0x1.767dcf5534862p-1",
    )]
)  # fmt: skip
_LOGF_LOGC = np.array(
    [float.fromhex(h) for h in (
        "-0x1.57bf7808caadep-2", "-0x1.2bef0a7c06ddbp-2", "-0x1.01eae7f513a67p-2",
        "-0x1.b31d8a68224e9p-3", "-0x1.6574f0ac07758p-3", "-0x1.1aa2bc79c81p-3",
        "-0x1.a4e76ce8c0e5ep-4", "-0x1.1973c5a611cccp-4", "-0x1.252f438e10c1ep-5",
        "0x0p+0", "0x1.aa5aa5df25984p-5", "0x1.c5e53aa362eb4p-4",
        "0x1.526e57720db08p-3", "0x1.bc2860d22477p-3", "0x1.1058bc8a07ee1p-2",
        "0x1.4043057b6ee09p-2",
    )]
)  # fmt: skip
_LOGF_POLY = tuple(
    float.fromhex(h)
    for h in ("-0x1.00ea348b88334p-2", "0x1.5575b0be00b6ap-2", "-0x1.ffffef20a4123p-2")
)
_LN2 = float.fromhex("0x1.62e42fefa39efp-1")
_LOGF_OFF = 0x3F330000


def glibc_logf(x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Natural log of positive, finite float32 values, rounded exactly as glibc's ``logf``.

    Parameters
    ----------
    x : array_like of float32, any shape
        Positive finite values (normal or subnormal). Other values give NaN/inf as numpy does.

    Returns
    -------
    ndarray of float32, same shape as ``x``

    Examples
    --------
    >>> glibc_logf(np.float32(1.0)).item(), round(float(glibc_logf(np.float32(0.5))), 6)
    (0.0, -0.693147)
    """
    xf = np.asarray(x, dtype=np.float32)
    ix = xf.view(np.uint32).astype(np.int64)
    special = (ix < 0x00800000) | (ix >= 0x7F800000)
    subnormal = (ix > 0) & (ix < 0x00800000)
    if np.any(subnormal):
        ix = ix.copy()
        normalised = (xf[subnormal] * np.float32(2.0**23)).view(np.uint32).astype(np.int64)
        ix[subnormal] = normalised - (23 << 23)
    tmp = (ix - _LOGF_OFF) & 0xFFFFFFFF
    i = (tmp >> (23 - 4)) % 16
    k = np.where(tmp >= 0x80000000, tmp - (1 << 32), tmp) >> 23  # arithmetic shift
    iz = (ix - (tmp & 0xFF800000)) & 0xFFFFFFFF
    z = iz.astype(np.uint32).view(np.float32).astype(np.float64)
    r = z * _LOGF_INVC[i] - 1.0
    y0 = _LOGF_LOGC[i] + k.astype(np.float64) * _LN2
    r2 = r * r
    y = _LOGF_POLY[1] * r + _LOGF_POLY[2]
    y = _LOGF_POLY[0] * r2 + y
    y = y * r2 + (y0 + r)
    out = y.astype(np.float32)
    out = np.where(ix == 0x3F800000, np.float32(0.0), out)
    if np.any(special & ~subnormal):
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(special & ~subnormal, np.log(xf), out)
    return out.astype(np.float32)


def _canonical_float(raw: npt.NDArray[np.uint32]) -> npt.NDArray[np.float32]:
    """``std::generate_canonical<float, 24>`` on one raw draw each (libstdc++)."""
    u = raw.astype(np.float32) / np.float32(4294967296.0)
    return np.where(u >= np.float32(1.0), np.nextafter(np.float32(1.0), np.float32(0.0)), u)


def normal_float(engine: MT19937, n: int) -> npt.NDArray[np.float32]:
    """``n`` draws of libstdc++'s ``std::normal_distribution<float>(0, 1)``.

    The Marsaglia polar method with libstdc++'s float/double mix and glibc ``logf``; each
    accepted pair of uniforms yields ``y * m`` then ``x * m``. A fresh distribution object
    is assumed (nothing saved from earlier calls); unused draws are consumed from
    ``engine``, which callers discard.

    Returns
    -------
    ndarray of float32, shape ``(n,)``
    """
    pairs_needed = (n + 1) // 2
    accepted_x: list[npt.NDArray[np.float32]] = []
    accepted_y: list[npt.NDArray[np.float32]] = []
    have = 0
    while have < pairs_needed:
        want = max(16, int((pairs_needed - have) * 1.35) + 8)
        u = _canonical_float(engine.draw(2 * want)).reshape(want, 2)
        two_u = np.float32(2.0) * u
        xy = (two_u.astype(np.float64) - 1.0).astype(np.float32)
        x, y = xy[:, 0], xy[:, 1]
        r2 = x * x + y * y
        keep = (r2 <= np.float32(1.0)) & (r2 != np.float32(0.0))
        accepted_x.append(x[keep])
        accepted_y.append(y[keep])
        have += int(keep.sum())
    x = np.concatenate(accepted_x)[:pairs_needed]
    y = np.concatenate(accepted_y)[:pairs_needed]
    r2 = x * x + y * y
    mult = np.sqrt(np.float32(-2.0) * glibc_logf(r2) / r2)
    out = np.stack([y * mult, x * mult], axis=1).reshape(-1)
    return out[:n].astype(np.float32)


def _lemire_u32(raw: int, bound: int) -> tuple[int, bool]:
    """One step of libstdc++'s ``_S_nd`` (Lemire) on a 32-bit draw: (value, accepted)."""
    product = raw * bound
    low = product & 0xFFFFFFFF
    if low < bound:
        threshold = ((1 << 32) - bound) % bound
        if low < threshold:
            return 0, False
    return product >> 32, True


def uniform_index_and_sign(
    engine: MT19937, n: int, bound: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int8]]:
    """``n`` alternating draws of ``uniform_int_distribution(0, bound - 1)`` and
    ``bernoulli_distribution(0.5)`` mapped to a +/-1 sign, as the reference's AMS sketch
    and Count-Sketch loops make them.

    Returns
    -------
    indices : ndarray of int64, shape ``(n,)``, values in ``[0, bound)``
    signs : ndarray of int8, shape ``(n,)``, values in ``{-1, +1}``
    """
    if bound < 1 or bound > 1 << 32:
        raise ValueError(f"bound must be in [1, 2**32], got {bound}")
    indices = np.empty(n, dtype=np.int64)
    signs = np.empty(n, dtype=np.int8)
    threshold = ((1 << 32) - bound) % bound
    done = 0
    while done < n:
        # Fast path: three raw draws per item (index, then two for the sign) unless
        # Lemire rejects, which needs low < (2**32 - bound) % bound: never for a power of
        # two, with probability below bound / 2**32 otherwise.
        m = n - done
        raw = engine.draw(3 * m).astype(np.uint64).reshape(m, 3)
        product = raw[:, 0] * np.uint64(bound)
        rejected = np.flatnonzero((product & np.uint64(0xFFFFFFFF)) < np.uint64(threshold))
        good = int(rejected[0]) if rejected.size else m
        indices[done : done + good] = (product[:good] >> np.uint64(32)).astype(np.int64)
        signs[done : done + good] = _bernoulli_half(raw[:good, 1], raw[:good, 2])
        if good == m:
            break
        # Item `good` rejected its first draw: replay it exactly, one draw at a time.
        engine.unread(raw.reshape(-1)[3 * good + 1 :].astype(np.uint32))
        accepted = False
        value = 0
        while not accepted:
            value, accepted = _lemire_u32(int(engine.draw(1)[0]), bound)
        pair = engine.draw(2).astype(np.uint64)
        indices[done + good] = value
        signs[done + good] = _bernoulli_half(pair[0:1], pair[1:2])[0]
        done += good + 1
    return indices, signs


def _bernoulli_half(
    first: npt.NDArray[np.uint64], second: npt.NDArray[np.uint64]
) -> npt.NDArray[np.int8]:
    """``bernoulli_distribution(0.5)`` via ``generate_canonical<double, 53>`` (two draws),
    mapped to ``2 * b - 1``."""
    total = first.astype(np.float64) + second.astype(np.float64) * 4294967296.0
    canon = total / 18446744073709551616.0
    canon = np.where(canon >= 1.0, np.nextafter(1.0, 0.0), canon)
    return np.where(canon < 0.5, 1, -1).astype(np.int8)
