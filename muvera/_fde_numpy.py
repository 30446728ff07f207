"""Vectorised numpy kernel of the FDE (no per-token Python loops).

For a chunk of items with tokens concatenated into ``X`` (N x d):

1. ``X @ simhash`` (one sgemm, blocked to stay in cache) gives the sign bits of every
   (token, repetition); the partition is the Gray-decoded bit pattern.
2. ``X @ ams`` (the AMS sketch as a dense +/-1 matrix; identity skips it) projects tokens.
3. A sparse one-nonzero-per-column matrix scatters each projected (token, repetition) into
   its (item, repetition, partition) row: sums for queries, sums / counts for documents.
4. Documents with filling: an empty partition takes the projected token whose sign bits
   are nearest in Hamming distance, lowest token index on ties.
5. An optional final Count-Sketch is one sparse matmul.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from ._matrices import FDEMatrices
from .config import FDEConfig

__all__ = ["NumpyKernel", "gray_decode", "popcount"]

_MATMUL_BLOCK = 2048  # tokens per sgemm call: keeps the output block in cache
_FILL_TRANSFORM_MAX_PARTITIONS = 4096  # above this, filling scans tokens per (item, repetition)
_INF = np.int64(1) << np.int64(62)


def popcount(x: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.uint8]:
    """Number of set bits of each non-negative integer (< 2**32), any shape."""
    x = np.asarray(x).astype(np.uint32)
    if hasattr(np, "bitwise_count"):
        counts: npt.NDArray[np.uint8] = np.bitwise_count(x).astype(np.uint8)
        return counts
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    b = x.view(np.uint8).reshape(*x.shape, 4)
    summed: npt.NDArray[np.uint8] = table[b].sum(axis=-1, dtype=np.uint8)
    return summed


def gray_decode(code: npt.NDArray[np.int64], num_bits: int) -> npt.NDArray[np.int64]:
    """Partition index of sign-bit pattern ``code`` (first hyperplane in the top bit).

    The reference appends bits as ``g = (g << 1) + (b XOR (g & 1))``, i.e. a prefix XOR;
    the sign bits of partition ``g`` are ``g ^ (g >> 1)``.

    >>> gray_decode(np.array([0b10, 0b11]), 2).tolist()
    [3, 2]
    """
    g = code.copy()
    shift = 1
    while shift < num_bits:
        g ^= g >> shift
        shift <<= 1
    return g


def _csc_matvecs() -> Any:
    """scipy's in-place sparse x dense kernel (accumulates into a caller-owned buffer), or None.

    Reusing one output buffer per thread avoids page-faulting a fresh array on every chunk
    (a 4x slowdown of the scatter step); the public ``S @ P`` is the fallback.
    """
    try:
        from scipy.sparse import _sparsetools

        return _sparsetools.csc_matvecs
    except (ImportError, AttributeError):  # pragma: no cover - depends on scipy internals
        return None


class NumpyKernel:
    """Encodes token chunks with numpy/scipy; built once per encoder."""

    def __init__(self, config: FDEConfig, matrices: FDEMatrices) -> None:
        import scipy.sparse as sp

        self._sp = sp
        self._matvecs = _csc_matvecs()
        self._local = threading.local()
        self.config = config
        R, d, k = config.num_repetitions, config.dimension, config.num_simhash_projections
        p, B = config.block_dimension, config.num_partitions
        self.R, self.d, self.k, self.p, self.B = R, d, k, p, B
        # (d, k*R): column j*R + r is hyperplane j of repetition r, so that the j-th sign
        # bits of all repetitions are one contiguous column block.
        self.simhash = np.ascontiguousarray(
            matrices.simhash.transpose(1, 2, 0).reshape(d, k * R), dtype=np.float32
        )
        self.ams: npt.NDArray[np.float32] | None = None
        if config.projection_type == "ams_sketch":
            ams = np.zeros((d, R, p), dtype=np.float32)
            rows = np.broadcast_to(np.arange(d)[None, :], (R, d))
            reps = np.broadcast_to(np.arange(R)[:, None], (R, d))
            ams[rows, reps, matrices.ams_indices] = matrices.ams_signs
            self.ams = ams.reshape(d, R * p)
        self.count_sketch_t: Any = None
        if config.final_projection_dimension is not None:
            D, f = config.raw_dimension, config.final_projection_dimension
            self.count_sketch_t = sp.csr_matrix(
                (
                    matrices.count_sketch_signs.astype(np.float32),
                    (matrices.count_sketch_indices, np.arange(D)),
                ),
                shape=(f, D),
            )
        self.gray_table = gray_decode(np.arange(256), self.k) if self.k <= 8 else None
        g = np.arange(B, dtype=np.int64)
        self.partition_bits = g ^ (g >> 1)  # sign bits of each partition
        self.fill_by_transform = B <= _FILL_TRANSFORM_MAX_PARTITIONS

    # -- steps ---------------------------------------------------------------------------
    def _buffer(self, name: str, shape: tuple[int, ...], dtype: Any) -> npt.NDArray[Any]:
        """A per-thread scratch array, reused across chunks (contents undefined)."""
        size = int(np.prod(shape))
        pool: dict[str, npt.NDArray[Any]] = self._local.__dict__.setdefault("pool", {})
        buf = pool.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = pool[name] = np.empty(max(size, 1), dtype=dtype)
        return buf[:size].reshape(shape)

    def _scatter(
        self,
        rows: int,
        row_id: npt.NDArray[np.int64],
        values: npt.NDArray[np.float32],
        per_col: int,
    ) -> npt.NDArray[np.float32]:
        """``out[row_id[t, r]] += values[t]`` (identity: ``per_col=R`` rows per token) or
        ``+= values[t * R + r]`` (``per_col=1``), as a fresh float32 ``(rows, width)`` array."""
        n_cols, width = values.shape
        indices = row_id.ravel()
        indptr = np.arange(0, indices.size + 1, per_col, dtype=np.int64)
        data = self._buffer("ones", (indices.size,), np.float32)
        data.fill(1.0)
        if self._matvecs is None:  # pragma: no cover - exercised only without scipy internals
            matrix = self._sp.csc_matrix((data, indices, indptr), shape=(rows, n_cols))
            return np.asarray(matrix @ values, dtype=np.float32)
        out = self._buffer("sums", (rows, width), np.float32)
        out.fill(0.0)
        self._matvecs(rows, n_cols, width, indptr, indices, data, values.ravel(), out.ravel())
        return out

    def _matmul(
        self, X: npt.NDArray[np.float32], W: npt.NDArray[np.float32], name: str
    ) -> npt.NDArray[np.float32]:
        out = self._buffer(name, (X.shape[0], W.shape[1]), np.float32)
        for s in range(0, X.shape[0], _MATMUL_BLOCK):
            np.matmul(X[s : s + _MATMUL_BLOCK], W, out=out[s : s + _MATMUL_BLOCK])
        return out

    def _codes(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        """Sign-bit patterns, int64 ``(N, R)``, first hyperplane in the top bit."""
        N, R, k = X.shape[0], self.R, self.k
        if k == 0:
            return np.zeros((N, R), dtype=np.int64)
        sketch = self._matmul(X, self.simhash, "sketch")  # (N, k*R), j-major columns
        small = np.uint8 if k <= 8 else np.uint16 if k <= 16 else np.uint32
        code = np.zeros((N, R), dtype=small)
        bit = self._buffer("bit", (N, R), np.bool_)
        for j in range(k):
            np.greater(sketch[:, j * R : (j + 1) * R], 0, out=bit)
            code <<= small(1)
            code |= bit
        return code.astype(np.int64)

    def encode(
        self, X: npt.NDArray[np.float32], lengths: npt.NDArray[np.int64], document: bool
    ) -> npt.NDArray[np.float32]:
        """FDEs of one chunk: float32 ``(len(lengths), output_dimension)``."""
        n_items, N = lengths.shape[0], X.shape[0]
        R, B, p = self.R, self.B, self.p
        rows = n_items * R * B
        code = self._codes(X)
        partition = (
            self.gray_table[code] if self.gray_table is not None else gray_decode(code, self.k)
        )
        item_base = np.repeat(np.arange(0, rows, R * B, dtype=np.int64), lengths)
        row_id = item_base[:, None] + np.arange(0, R * B, B, dtype=np.int64) + partition
        projected: npt.NDArray[np.float32] | None = None
        if self.ams is not None:
            projected = self._matmul(X, self.ams, "projected")  # (N, R*p)
            sums = self._scatter(rows, row_id, projected.reshape(N * R, p), per_col=1)
        else:
            sums = self._scatter(rows, row_id, X, per_col=R)
        if document:
            counts = np.bincount(row_id.ravel(), minlength=rows)
            sums /= np.maximum(counts, 1).astype(np.float32)[:, None]
            if self.config.fill_empty_partitions and self.k > 0:
                self._fill(sums, counts, code, lengths, X, projected)
        fde = sums.reshape(n_items, R * B * p)
        if self.count_sketch_t is not None:
            return np.asarray((self.count_sketch_t @ fde.T).T, dtype=np.float32)
        return fde  # a scratch buffer: the caller copies it out before the next chunk

    def _fill(
        self,
        sums: npt.NDArray[np.float32],
        counts: npt.NDArray[np.int64],
        code: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
        X: npt.NDArray[np.float32],
        projected: npt.NDArray[np.float32] | None,
    ) -> None:
        R, B = self.R, self.B
        n_items = lengths.shape[0]
        empty = (counts == 0).reshape(n_items * R, B)
        # (item, repetition) rows that have an empty partition and at least one token.
        need = np.flatnonzero(empty.any(axis=1) & np.repeat(lengths > 0, R))
        if need.size == 0:
            return
        if self.fill_by_transform:
            nearest = self._nearest_by_code(need, code, lengths)
        else:
            nearest = self._nearest_by_token(need, empty, code, lengths)
        m_idx, g_idx = np.nonzero(empty[need])
        tok = nearest[m_idx, g_idx]
        row = need[m_idx]
        rep = row % R
        values = X[tok] if projected is None else projected.reshape(-1, R, self.p)[tok, rep]
        sums[row * B + g_idx] = values

    def _nearest_by_code(
        self,
        need: npt.NDArray[np.int64],
        code: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.int64]:
        """Nearest token of each partition for the (item, rep) rows ``need``, ``(len(need), B)``."""
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        out = np.empty((need.size, self.B), dtype=np.int64)
        step = max(1, (1 << 22) // self.B)  # bounds the (rows, B) work array
        for s in range(0, need.size, step):
            out[s : s + step] = self._nearest_block(need[s : s + step], code, offsets)
        return out

    def _nearest_block(
        self,
        need: npt.NDArray[np.int64],
        code: npt.NDArray[np.int64],
        offsets: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.int64]:
        R, B = self.R, self.B
        big = np.int64(code.shape[0] + 1)
        item, rep = need // R, need % R
        counts_needed = offsets[item + 1] - offsets[item]
        # The tokens of every needed row, concatenated; m_of[j] is the row of entry j.
        m_of = np.repeat(np.arange(need.size), counts_needed)
        row_start = np.cumsum(counts_needed) - counts_needed
        tok = offsets[item][m_of] + np.arange(m_of.size) - row_start[m_of]
        # key[m, c]: lowest token index with sign bits c in row m (_INF if none).
        key = np.full(need.size * B, _INF, dtype=np.int64)
        np.minimum.at(key, m_of * B + code[tok, rep[m_of]], tok)
        # Min-plus distance transform over the hypercube of sign-bit patterns: after the
        # pass over bit j, key[m, c] = min over c' differing from c only in bits <= j of
        # key0[m, c'] + big * hamming(c, c'). Hamming distance is a sum over bits, so one
        # pass per bit is exact, and the min of (distance * big + token) picks the nearest
        # token, lowest index on ties.
        for j in range(self.k):
            halves = key.reshape(need.size, B >> (j + 1), 2, 1 << j)
            low, high = halves[:, :, 0, :], halves[:, :, 1, :]
            new_low = np.minimum(low, high + big)
            np.minimum(high, low + big, out=high)
            low[...] = new_low
        nearest: npt.NDArray[np.int64] = key.reshape(need.size, B)[:, self.partition_bits] % big
        return nearest

    def _nearest_by_token(
        self,
        need: npt.NDArray[np.int64],
        empty: npt.NDArray[np.bool_],
        code: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.int64]:
        """Same as :meth:`_nearest_by_code` for very many partitions (only empty ones set)."""
        R, B = self.R, self.B
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        out = np.zeros((need.size, B), dtype=np.int64)
        for m, row in enumerate(need):
            item, rep = divmod(int(row), R)
            lo, hi = offsets[item], offsets[item + 1]
            targets = np.flatnonzero(empty[row])
            gray = targets ^ (targets >> 1)
            dist = popcount(gray[:, None] ^ code[lo:hi, rep][None, :])
            out[m, targets] = lo + np.argmin(dist, axis=1)
        return out
