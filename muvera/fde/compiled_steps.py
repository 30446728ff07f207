"""FDE steps in the compiled kernel (``muvera/native/fde.c``): one sgemm gives the sign bits,
then per item the raw tokens are summed per (repetition, partition) and each non-empty
partition is projected once (the projection is linear): about half the arithmetic of the
numpy steps for documents. Filling runs in the same pass."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from ..native import NativeLibrary, default_threads
from .plan import FDEPlan

__all__ = ["MAX_SCRATCH_BYTES", "CompiledFDE"]

MAX_SCRATCH_BYTES = 1 << 28  # the kernel's per-repetition bucket buffer (B x d floats)
_WORK_PER_THREAD = 1 << 22  # bucket additions that pay for one more thread


class CompiledFDE:
    """FDE steps in C for one :class:`FDEPlan`; :meth:`fits` says whether the kernel takes it."""

    name = "native"

    def __init__(self, plan: FDEPlan, library: NativeLibrary) -> None:
        self.plan = plan
        self.library = library
        self.projection = plan.projection()
        self.count_sketch_t = plan.count_sketch()
        self._local = threading.local()

    @staticmethod
    def fits(plan: FDEPlan) -> bool:
        """Whether one repetition's buckets fit the kernel's scratch (e.g. not k=20, d=128)."""
        return plan.B * plan.d * 4 <= MAX_SCRATCH_BYTES

    def _out(self, shape: tuple[int, int]) -> npt.NDArray[np.float32]:
        """A per-thread output buffer, reused across chunks (contents undefined)."""
        buf: npt.NDArray[np.float32] | None = getattr(self._local, "out", None)
        size = math.prod(shape)
        if buf is None or buf.size < size:
            buf = self._local.out = np.empty(max(size, 1), dtype=np.float32)
        return buf[:size].reshape(shape)

    def encode(
        self, X: npt.NDArray[np.float32], lengths: npt.NDArray[np.int64], document: bool
    ) -> npt.NDArray[np.float32]:
        """FDEs of one chunk (tokens ``X`` ``(N, d)`` of items of ``lengths``): float32
        ``(len(lengths), output_dimension)``, possibly a scratch buffer (copy it out)."""
        plan = self.plan
        n_items = lengths.shape[0]
        X = np.ascontiguousarray(X, dtype=np.float32)
        sketch = np.matmul(X, plan.simhash)  # (N, k*R): column j*R + r
        offsets = np.zeros(n_items + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        raw = self._out((n_items, plan.R * plan.B * plan.p))
        work = X.shape[0] * plan.R * plan.d  # bucket additions
        threads = max(1, min(default_threads(), work // _WORK_PER_THREAD))
        self.library.fde_encode(
            X, sketch, offsets, plan.R, plan.k, self.projection, plan.p, document,
            document and plan.fill, raw, threads,
        )  # fmt: skip
        if self.count_sketch_t is not None:
            out: Any = (self.count_sketch_t @ raw.T).T
            return np.asarray(out, dtype=np.float32)
        return raw
