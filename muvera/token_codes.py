"""Quantized token vectors for the re-rank: int8 or int4 codes with one float32 scale per
token.

A token row of ``d`` values is stored as its scale (float32, little-endian) followed by its
codes: ``d`` signed bytes (``"int8"``: ``code = round(x / scale)``, ``scale = max|x| / 127``)
or ``h = ceil(d / 2)`` bytes of two 4-bit codes each (``"int4"``: ``scale = max|x| / 7``,
code ``c`` in ``-7 .. 7`` stored as the nibble ``c + 8``; byte ``i`` holds value ``i`` in
its low nibble and value ``h + i`` in its high one, an odd ``d`` padded with a zero code,
so that both halves decode with contiguous vector loads). A value decodes to
``scale * code`` in float32, the same product in numpy and in the compiled MaxSim kernel
(``maxsim.c``), so both see the same vectors. A row of zeros has scale 0.

Per-token scales keep vectors of any norm (raw, unnormalised model outputs) as exact as
normalised ones: the error of a value is at most ``scale / 2`` (max|x| / 254 for int8).
An index quantizes each token's difference from a centre (the mean token of the first
documents added, up to 2,048 of them): where all tokens share a large component, that
component would otherwise set every scale and leave few levels for what tells tokens
apart. MaxSim needs no decoding
of the centre: ``max_j <q, c + r_j> = <q, c> + max_j <q, r_j>``, so the kernel scores
the stored differences and one ``<q_i, c>`` per query token is added
(:func:`centre_terms`).

``"residual2"`` rows hold 2 bits a value (a quarter of int8's codes, PLAID's default):
a scale per token (the least-squares step of a uniform 4-level quantizer for Gaussian
values of the row's root mean square) and codes ``c`` in ``0 .. 3`` decoding to ``scale *
(c - 1.5)``, byte ``i`` of the ``q = ceil(d / 4)`` holding values ``i, q + i, 2q + i, 3q
+ i`` from its low bits up; like residual4 they are differences from the token cells'
centroids (from the centre before the cells are fitted).

``"residual4lm"`` rows are residual4's rows with other levels: nibble ``c`` (0 .. 15,
the same packing) decodes to ``scale * LM_LEVELS[c]``, the 16 levels of the Lloyd-Max
quantizer of a unit Gaussian (Max, 1960), and a row's scale is its root mean square times
whichever of the eight multipliers 0.80, 0.85, .., 1.15 leaves the least squared error
(:data:`LM_MULTIPLIERS`). The same 4 bits a value lose about 0.57 of residual4's squared
error (0.0081-0.0084 against 0.0141-0.0146 of a residual's energy on text-like, SciFact
and raw msmarco-mini residuals; ``benchmarks/check_lm_scales.py``).

``"residual4"`` rows are int4 rows of a token's difference from its token cell's centroid
(:mod:`muvera.cells`, PLAID's residual compression) rather than from the centre: a token
minus the centroid nearest to it is smaller than a token minus the mean, so the same 4
bits per value lose less (the share of the exact top-10 kept on SciFact: 0.97 against
0.95 for int4, 0.92 against 0.84 with a shared component; ``bench_token_codes.py``). Rows
written before the cells are fitted keep the centre; decoding adds
``bases[label] = centroid[label] - centre`` to the rows from the first residual one on
(:attr:`QuantizedTokens.residual`), after which both kinds of rows are differences from
the centre and MaxSim proceeds as above.

>>> x = np.array([[0.5, -0.25, 0.0], [0.0, 0.0, 0.0]], np.float32)
>>> rows = encode_rows(x, "int8")
>>> rows.shape, row_bytes("int8", 3), row_bytes("int4", 3)
((2, 7), 7, 6)
>>> decode_rows(rows, "int8", 3)
array([[ 0.5      , -0.2519685,  0.       ],
       [ 0.       ,  0.       ,  0.       ]], dtype=float32)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from . import native
from .errors import MuveraError

__all__ = [
    "CODE_KINDS",
    "LM_LEVELS",
    "LM_MULTIPLIERS",
    "RESIDUAL_KINDS",
    "QuantizedTokens",
    "centre_terms",
    "decode_rows",
    "encode_rows",
    "row_bytes",
    "row_scales",
]

# name -> (largest code, the kernel's kind number: 0 float32, 1 float16 are plain arrays)
CODE_KINDS = {
    "int8": (127, 2), "int4": (7, 3), "residual4": (7, 3), "residual2": (2, 4),
    "residual4lm": (15, 5),
}  # fmt: skip
RESIDUAL_KINDS = ("residual4", "residual2", "residual4lm")  # differences from the token cells
# "residual4lm": the Lloyd-Max levels of a unit Gaussian in 16 steps (Max, 1960), ascending
# (MUVERA_LM_LEVELS in muvera.h), the cuts between them, and the multipliers of a row's
# root mean square its scale is chosen among (MUVERA_LM_MULTIPLIERS; chosen on text-like
# residuals at 10^6, checked on SciFact and raw msmarco-mini ones)
_LM_HALF = [0.12839, 0.38814, 0.65680, 0.94245, 1.25623, 1.61812, 2.06890, 2.73257]
LM_LEVELS = np.array([-v for v in reversed(_LM_HALF)] + _LM_HALF, np.float32)
_LM_CUTS = ((LM_LEVELS[1:] + LM_LEVELS[:-1]) / np.float32(2)).astype(np.float32)
LM_MULTIPLIERS = np.array([0.80, 0.85, 0.90, 0.95, 1.00, 1.05, 1.10, 1.15], np.float32)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# the step of a uniform 4-level quantizer with the least squared error for Gaussian values,
# in units of their standard deviation (Max, 1960): levels +-0.4979, +-1.4937
_STEP2 = 0.9957
_SCALE = np.dtype("<f4")
_COMPILED_MAX_D = 4092  # the widest rows codes.c encodes (wider: numpy)
_THREADED_VALUES = 1 << 20  # values from which the compiled encoder runs on every core


def _check_kind(kind: str) -> int:
    if kind not in CODE_KINDS:
        raise MuveraError(f"token codes must be one of {sorted(CODE_KINDS)}, got {kind!r}")
    return CODE_KINDS[kind][0]


def row_bytes(kind: str, dimension: int) -> int:
    """Bytes of one stored token row of ``dimension`` values: 4 (the scale) + the codes."""
    _check_kind(kind)
    if kind == "residual2":
        return 4 + (dimension + 3) // 4
    return 4 + (dimension if kind == "int8" else (dimension + 1) // 2)  # 4-bit: two a byte


def row_scales(x: npt.NDArray[np.float32], kind: str) -> npt.NDArray[np.float32]:
    """Each row's scale, float32 ``(n,)``: max|x| / the largest code, or for ``"residual2"``
    the least-squares step for Gaussian values of the row's root mean square; for
    ``"residual4lm"`` the root mean square itself (in float64, no overflow), which the
    encoder multiplies by the best of :data:`LM_MULTIPLIERS`."""
    top = _check_kind(kind)
    n, d = x.shape
    if kind == "residual4lm":
        wide = x.astype(np.float64)
        rms: npt.NDArray[np.float32] = np.sqrt(
            np.einsum("ij,ij->i", wide, wide) / max(d, 1)
        ).astype(np.float32)
        return rms
    if kind == "residual2":
        rms = np.sqrt(np.einsum("ij,ij->i", x, x) / max(d, 1)).astype(np.float32)
        step: npt.NDArray[np.float32] = (rms * np.float32(_STEP2)).astype(np.float32)
        return step
    peak = np.maximum(x.max(axis=1), -x.min(axis=1)) if d else np.zeros(n, np.float32)
    peak += np.float32(0)  # -0.0 (rows of zeros) -> 0.0, as |x| gives
    scale: npt.NDArray[np.float32] = (peak / np.float32(top)).astype(np.float32)
    return scale


def encode_rows(x: npt.NDArray[Any], kind: str, *, compiled: bool = True) -> npt.NDArray[np.uint8]:
    """Quantize float rows ``(n, d)`` (finite) to stored rows, uint8 ``(n, row_bytes)``.

    The codes come from the compiled kernel where it is loaded (``codes.c``, on every core
    for large batches), else from numpy (``compiled=False``: always); both write the same
    bytes, from the same scales (:func:`row_scales`)."""
    _check_kind(kind)
    x = np.ascontiguousarray(x, dtype=np.float32)
    scale = row_scales(x, kind)
    kernel = native.load() if compiled else None
    n, d = x.shape
    if kernel is not None and d <= _COMPILED_MAX_D:
        out = np.empty((n, row_bytes(kind, d)), dtype=np.uint8)
        threads = native.default_threads() if x.size >= _THREADED_VALUES else 1
        kernel.token_codes(x, scale, CODE_KINDS[kind][1], out, threads)
        return out
    return _encode_numpy(x, kind, scale)


def _encode_numpy(
    x: npt.NDArray[np.float32], kind: str, scale: npt.NDArray[np.float32]
) -> npt.NDArray[np.uint8]:
    """The literal reference of the stored rows (``codes.c`` writes the same bytes): a
    value ``v`` of a row of scale ``s`` (1 for ``s = 0``) is ``clip(rint(v / s), -top,
    top)`` for int8/int4 and ``clip(floor(v / s) + 2, 0, 3)`` for 2 bits."""
    top = CODE_KINDS[kind][0]
    n, d = x.shape
    if kind == "residual4lm":
        return _encode_lloyd_max(x, scale)
    safe = np.where(scale > 0, scale, np.float32(1))
    out = np.empty((n, row_bytes(kind, d)), dtype=np.uint8)
    out[:, :4] = scale.astype(_SCALE).view(np.uint8).reshape(n, 4)
    scaled = np.divide(x, safe[:, None])
    if kind == "residual2":
        np.floor(scaled, out=scaled)
        scaled += 2
        np.clip(scaled, 0, 3, out=scaled)
        quarter = (d + 3) // 4
        padded = np.full((n, 4 * quarter), 2, np.uint8)
        padded[:, :d] = scaled.astype(np.uint8)
        parts = [padded[:, i * quarter : (i + 1) * quarter] for i in range(4)]
        out[:, 4:] = parts[0] | (parts[1] << 2) | (parts[2] << 4) | (parts[3] << 6)
        return out
    np.rint(scaled, out=scaled)
    np.clip(scaled, -top, top, out=scaled)
    codes = scaled.astype(np.int8)
    del scaled
    if kind == "int8":
        out[:, 4:] = codes.view(np.uint8)
    else:
        codes += np.int8(8)  # -7 .. 7 -> 1 .. 15: the stored nibbles
        out[:, 4:] = _pack_nibbles(codes.view(np.uint8))
    return out


def _pack_nibbles(nibbles: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``(n, d)`` values 0 .. 15 -> ``(n, ceil(d / 2))`` bytes: value i in byte i's low
    nibble, value ``ceil(d / 2) + i`` in its high one, an odd ``d`` padded with 8."""
    n, d = nibbles.shape
    if d % 2:
        nibbles = np.concatenate([nibbles, np.full((n, 1), 8, np.uint8)], axis=1)
    half = (d + 1) // 2
    packed: npt.NDArray[np.uint8] = (nibbles[:, :half] | (nibbles[:, half:] << 4)).astype(
        np.uint8, copy=False
    )
    return packed


def _lloyd_max_codes(x: npt.NDArray[np.float32], scale: npt.NDArray[np.float32]) -> Any:
    """Level numbers 0 .. 15 of ``x / scale`` (float32; scale 0 -> 1): how many cuts lie
    below."""
    safe = np.where(scale > 0, scale, np.float32(1))
    return np.searchsorted(_LM_CUTS, np.divide(x, safe[:, None]), side="left")


def _encode_lloyd_max(
    x: npt.NDArray[np.float32], rms: npt.NDArray[np.float32]
) -> npt.NDArray[np.uint8]:
    """The reference of ``"residual4lm"`` rows (codes.c kind 5 writes the same bytes): per
    row and multiplier ``m``, the scale ``s = float32(min(rms x m, FLT_MAX))`` and its
    codes; the first ``m`` of least ``sum (x - s x level)^2`` (float64, summed value by
    value as the kernel does) wins."""
    n, d = x.shape
    wide = x.astype(np.float64)
    best = np.zeros(n, np.float32)
    least = np.full(n, np.inf)
    for i, m in enumerate(LM_MULTIPLIERS.astype(np.float64)):
        s = np.minimum(rms.astype(np.float64) * m, _FLOAT32_MAX).astype(np.float32)
        levels = LM_LEVELS.astype(np.float64)[_lloyd_max_codes(x, s)]
        t = wide - s.astype(np.float64)[:, None] * levels
        error = np.cumsum(t * t, axis=1)[:, -1] if d else np.zeros(n)
        better = (error < least) | (i == 0)
        best[better], least[better] = s[better], error[better]
    out = np.empty((n, row_bytes("residual4lm", d)), dtype=np.uint8)
    out[:, :4] = best.astype(_SCALE).view(np.uint8).reshape(n, 4)
    out[:, 4:] = _pack_nibbles(_lloyd_max_codes(x, best).astype(np.uint8))
    return out


def decode_rows(rows: npt.NDArray[np.uint8], kind: str, dimension: int) -> npt.NDArray[np.float32]:
    """Stored rows uint8 ``(n, row_bytes)`` back to float32 ``(n, dimension)``."""
    _check_kind(kind)
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    n = rows.shape[0]
    if rows.ndim != 2 or rows.shape[1] != row_bytes(kind, dimension):
        raise MuveraError(f"{kind} token rows of {dimension} values must be (n, "
                          f"{row_bytes(kind, dimension)}) bytes, got {rows.shape}")  # fmt: skip
    scale = rows[:, :4].copy().view(_SCALE).reshape(n).astype(np.float32)
    if kind == "int8":
        codes = rows[:, 4:].view(np.int8).astype(np.float32)
    elif kind == "residual2":
        packed = rows[:, 4:]
        quarter = packed.shape[1]
        four = np.empty((n, 4 * quarter), np.float32)
        for i in range(4):
            four[:, i * quarter : (i + 1) * quarter] = (packed >> (2 * i)) & 3
        codes = four[:, :dimension] - np.float32(1.5)
    else:
        packed = rows[:, 4:]
        half = packed.shape[1]
        both = np.empty((n, 2 * half), np.int16)
        both[:, :half] = packed & 15
        both[:, half:] = packed >> 4
        if kind == "residual4lm":
            codes = LM_LEVELS[both[:, :dimension]]
        else:
            codes = (both[:, :dimension] - 8).astype(np.float32)
    return (scale[:, None] * codes).astype(np.float32, copy=False)


def centre_terms(
    queries: npt.NDArray[np.float32], query_offsets: npt.NDArray[np.int64], centre: Any
) -> npt.NDArray[np.float32]:
    """``sum_i <q_i, centre>`` of each query, float32 ``(n_queries,)`` (0 without tokens)."""
    per_token = np.asarray(queries, np.float32) @ np.asarray(centre, np.float32)
    sums = np.concatenate([[0.0], np.cumsum(per_token, dtype=np.float64)])
    out: npt.NDArray[np.float32] = (sums[query_offsets[1:]] - sums[query_offsets[:-1]]).astype(
        np.float32
    )
    return out


class QuantizedTokens:
    """A matrix of stored token rows read in place (a memory map is fine): indexing rows
    decodes them to float32 (``centre`` added back), ``shape`` is ``(rows, dimension)`` as
    for a float matrix, and the compiled MaxSim kernel reads :attr:`rows` directly.

    >>> q = QuantizedTokens(encode_rows(np.eye(2, dtype=np.float32), "int4"), "int4", 2)
    >>> q.shape, q[1:2]
    ((2, 2), array([[0., 1.]], dtype=float32))
    """

    ndim = 2

    def __init__(
        self,
        rows: npt.NDArray[np.uint8],
        kind: str,
        dimension: int,
        centre: Any = None,
        residual: tuple[npt.NDArray[np.float32], npt.NDArray[np.uint16], int] | None = None,
    ) -> None:
        if rows.ndim != 2 or rows.shape[1] != row_bytes(kind, dimension):
            need = row_bytes(kind, dimension)
            raise MuveraError(
                f"{kind} token rows of {dimension} values need {need} bytes each, got {rows.shape}"
            )
        self.rows = rows
        self.centre = None if centre is None else np.asarray(centre, np.float32)
        self.kind = kind
        self.code = CODE_KINDS[kind][1]
        self.dimension = dimension
        self.residual = None
        if residual is not None:  # (bases (n, d) float32, labels (rows,) uint16, first row)
            bases, labels, first = residual
            bases = np.ascontiguousarray(bases, np.float32)
            labels = np.ascontiguousarray(labels, np.uint16)
            if bases.ndim != 2 or bases.shape[1] != dimension or labels.ndim != 1:
                raise MuveraError("residual token rows need (n, d) bases and 1-D labels")
            self.residual = (bases, labels, int(first))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows.shape[0], self.dimension)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, key: Any) -> npt.NDArray[np.float32]:
        if not isinstance(key, slice):
            raise TypeError("QuantizedTokens takes row slices")
        decoded = decode_rows(self.rows[key], self.kind, self.dimension)
        if self.residual is not None:
            start, stop, step = key.indices(self.rows.shape[0])
            if step != 1:
                raise TypeError("QuantizedTokens takes row slices of step 1")
            bases, labels, first = self.residual
            if max(start, first) < stop:
                if stop > labels.shape[0]:
                    raise MuveraError("residual token rows past the end of their cell labels")
                cells = labels[max(start, first) : stop]
                if cells.size and int(cells.max()) >= bases.shape[0]:
                    raise MuveraError("a residual token row's cell is out of range")
                decoded[max(start, first) - start :] += bases[cells]
        return decoded if self.centre is None else decoded + self.centre
