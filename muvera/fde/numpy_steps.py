"""Vectorised numpy kernel of the FDE (no per-token Python loops).

A chunk of items arrives with its tokens concatenated into ``X`` (N x d). Tokens are then
processed in cache-sized blocks, each through the same three steps:

1. One sgemm ``X_block @ [AMS | SimHash | pad]``: the AMS sketch is stored as a dense
   +/-1 matrix so projecting all repetitions and computing all sign bits is one BLAS call
   (identity projection: only the SimHash columns).
2. Sign bits -> partition per (token, repetition), Gray-decoded as the reference does.
3. A sparse one-nonzero-per-column matrix scatters each projected (token, repetition)
   into its (item, repetition, partition) row, reading the sgemm output in place while it
   is still in cache (the sign-bit columns are skipped as empty sparse columns).

Documents then divide by partition sizes and, with filling, give each empty partition the
projected token whose sign bits are nearest in Hamming distance (lowest token index on
ties), found with a distance transform over the hypercube of sign-bit patterns. An
optional final Count-Sketch is one sparse matmul.

The compiled steps (:mod:`muvera.fde.compiled_steps`) compute the same FDEs in C.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from .plan import FDEPlan, gray_decode, popcount

__all__ = ["NumpyFDE"]

_TOKEN_BLOCK = 1024  # tokens per sgemm + scatter step: the block's output stays in cache
_FILL_TRANSFORM_MAX_PARTITIONS = 4096  # above this, filling scans tokens per (item, repetition)
_INF = np.int64(1) << np.int64(62)


def _csc_matvecs() -> Any:
    """scipy's in-place sparse x dense kernel (accumulates into a caller-owned buffer), or None.

    It lets the scatter read the sgemm output in place and write into a reused buffer
    (a fresh output array per chunk page-faults: 4x slower); ``S @ V`` is the fallback.
    """
    try:
        from scipy.sparse import _sparsetools

        return _sparsetools.csc_matvecs
    except (ImportError, AttributeError):  # pragma: no cover - depends on scipy internals
        return None


class NumpyFDE:
    """FDE steps in numpy/scipy, built once per encoder from its :class:`FDEPlan`."""

    name = "numpy"

    def __init__(self, plan: FDEPlan) -> None:
        import scipy.sparse as sp

        self._sp = sp
        self._matvecs = _csc_matvecs()
        self._local = threading.local()
        self.plan = plan
        self.config = plan.config
        R, d, k, p, B = plan.R, plan.d, plan.k, plan.p, plan.B
        self.R, self.d, self.k, self.p, self.B = R, d, k, p, B
        self.simhash = plan.simhash
        self.ams = plan.ams
        if self.ams is not None:
            # Fused sgemm operand [AMS | SimHash | zero pad]: each output row is R + extra
            # "virtual rows" of p floats, the first R being the projected repetitions.
            pad = -(k * R) % p
            self.fused = np.ascontiguousarray(
                np.hstack([self.ams, self.simhash, np.zeros((d, pad), np.float32)])
            )
            self.sketch_offset = R * p
            self.virtual_rows = R + (k * R + pad) // p
        else:
            self.fused = self.simhash
            self.sketch_offset = 0
            self.virtual_rows = 0
        self.count_sketch_t = plan.count_sketch()
        self.code_dtype = np.uint8 if k <= 8 else np.uint16 if k <= 16 else np.uint32
        self.gray_table = gray_decode(np.arange(256), k) if k <= 8 else None
        self.rep_base = np.arange(0, R * B, B, dtype=np.int64)
        self.partition_bits = plan.partition_bits
        self.fill_by_transform = B <= _FILL_TRANSFORM_MAX_PARTITIONS
        # CSC column pointers of one token block: one nonzero per (token, repetition)
        # column; the sign-bit virtual rows of the fused layout are empty columns.
        if self.ams is not None:
            u = np.arange(_TOKEN_BLOCK * self.virtual_rows + 1, dtype=np.int64)
            self.indptr = (u // self.virtual_rows) * R + np.minimum(u % self.virtual_rows, R)
        else:
            self.indptr = np.arange(0, _TOKEN_BLOCK * R + 1, R, dtype=np.int64)
        self.ones = np.ones(_TOKEN_BLOCK * R, dtype=np.float32)

    # -- helpers -------------------------------------------------------------------------
    def _buffer(self, name: str, shape: tuple[int, ...], dtype: Any) -> npt.NDArray[Any]:
        """A per-thread scratch array, reused across chunks (contents undefined)."""
        size = math.prod(shape)
        pool: dict[str, npt.NDArray[Any]] = self._local.__dict__.setdefault("pool", {})
        buf = pool.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = pool[name] = np.empty(max(size, 1), dtype=dtype)
        return buf[:size].reshape(shape)

    def _scatter_add(
        self,
        out: npt.NDArray[np.float32],
        indptr: npt.NDArray[np.int64],
        indices: npt.NDArray[np.int64],
        values: npt.NDArray[np.float32],
    ) -> None:
        """``out[indices[j]] += values[column j]`` for the CSC columns ``indptr`` describes;
        ``values`` is ``(n_columns, out.shape[1])`` row-major."""
        rows, width = out.shape
        n_columns = indptr.size - 1
        data = self.ones[: indices.size]
        if self._matvecs is None:  # pragma: no cover - exercised only without scipy internals
            matrix = self._sp.csc_matrix((data, indices, indptr), shape=(rows, n_columns))
            out += np.asarray(matrix @ values.reshape(n_columns, width), dtype=np.float32)
            return
        self._matvecs(rows, n_columns, width, indptr, indices, data, values.ravel(), out.ravel())

    def _block_codes(self, sketch: npt.NDArray[np.float32], out: npt.NDArray[Any]) -> None:
        """Sign-bit patterns of a block into ``out`` ``(m, R)``, first hyperplane on top."""
        R = self.R
        out.fill(0)
        bit = self._buffer("bit", out.shape, np.bool_)
        one = self.code_dtype(1)
        for j in range(self.k):
            np.greater(sketch[:, j * R : (j + 1) * R], 0, out=bit)
            out <<= one
            out |= bit

    # -- encoding ------------------------------------------------------------------------
    def encode(
        self, X: npt.NDArray[np.float32], lengths: npt.NDArray[np.int64], document: bool
    ) -> npt.NDArray[np.float32]:
        """FDEs of one chunk: float32 ``(len(lengths), output_dimension)``.

        The result may be a scratch buffer: copy it out before encoding the next chunk.
        """
        n_items, N = lengths.shape[0], X.shape[0]
        R, B, p, k = self.R, self.B, self.p, self.k
        rows = n_items * R * B
        fill = document and self.config.fill_empty_partitions and k > 0
        sums = self._buffer("sums", (rows, p), np.float32)
        sums.fill(0.0)
        item_base = np.repeat(np.arange(0, rows, R * B, dtype=np.int64), lengths)
        row_id = self._buffer("row_id", (N, R), np.int64)
        code = self._buffer("code", (N, R), self.code_dtype)
        width = self.fused.shape[1]
        for s in range(0, N, _TOKEN_BLOCK):
            e = min(N, s + _TOKEN_BLOCK)
            m = e - s
            block = self._buffer("block", (m, width), np.float32)
            if width:
                np.matmul(X[s:e], self.fused, out=block)
            codes = code[s:e]
            self._block_codes(block[:, self.sketch_offset :], codes)
            rid = row_id[s:e]
            np.add(item_base[s:e, None], self.rep_base, out=rid)
            rid += (
                self.gray_table[codes]
                if self.gray_table is not None
                else gray_decode(codes.astype(np.int64), k)
            )
            if self.ams is not None:
                indptr = self.indptr[: m * self.virtual_rows + 1]
                self._scatter_add(sums, indptr, rid.ravel(), block)
            else:
                self._scatter_add(sums, self.indptr[: m + 1], rid.ravel(), X[s:e])
        if document:
            counts = np.bincount(row_id.ravel(), minlength=rows)
            sums /= np.maximum(counts, 1).astype(np.float32)[:, None]
            if fill:
                self._fill(sums, counts, code, lengths, X)
        fde = sums.reshape(n_items, R * B * p)
        if self.count_sketch_t is not None:
            return np.asarray((self.count_sketch_t @ fde.T).T, dtype=np.float32)
        return fde

    def _fill(
        self,
        sums: npt.NDArray[np.float32],
        counts: npt.NDArray[np.int64],
        code: npt.NDArray[Any],
        lengths: npt.NDArray[np.int64],
        X: npt.NDArray[np.float32],
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
        target = need[m_idx] * B + g_idx
        if self.ams is None:
            sums[target] = X[tok]
            return
        # Project only the chosen tokens, one small sgemm per repetition.
        rep = need[m_idx] % R
        order = np.argsort(rep, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(rep, minlength=R))])
        p = self.p
        for r in range(R):
            sel = order[bounds[r] : bounds[r + 1]]
            if sel.size:
                sums[target[sel]] = X[tok[sel]] @ self.ams[:, r * p : (r + 1) * p]

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
