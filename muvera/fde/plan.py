"""The prepared plan of an encoder: every array the FDE steps need, derived once from the
config and its random matrices, shared by the numpy, compiled and torch steps."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from .config import FDEConfig
from .matrices import FDEMatrices

__all__ = ["FDEPlan", "gray_decode", "popcount"]


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


@dataclasses.dataclass(frozen=True, eq=False)
class FDEPlan:
    """What every set of FDE steps reads (all numpy, built by :meth:`build`).

    ``simhash`` float32 ``(d, k*R)``: column ``j*R + r`` is hyperplane ``j`` of repetition
    ``r`` (the j-th sign bits of all repetitions are one contiguous column block).
    ``ams`` float32 ``(d, R*p)``: the AMS sketch as a dense +/-1 matrix, or None for the
    identity projection. ``partition_bits`` int64 ``(B,)``: the sign bits of each partition.
    """

    config: FDEConfig
    matrices: FDEMatrices
    R: int
    d: int
    k: int
    p: int
    B: int
    simhash: npt.NDArray[np.float32]
    ams: npt.NDArray[np.float32] | None
    partition_bits: npt.NDArray[np.int64]

    @classmethod
    def build(cls, config: FDEConfig, matrices: FDEMatrices) -> FDEPlan:
        R, d, k = config.num_repetitions, config.dimension, config.num_simhash_projections
        p, B = config.block_dimension, config.num_partitions
        simhash = np.ascontiguousarray(
            matrices.simhash.transpose(1, 2, 0).reshape(d, k * R), dtype=np.float32
        )
        ams: npt.NDArray[np.float32] | None = None
        if config.projection_type == "ams_sketch":
            dense = np.zeros((d, R, p), dtype=np.float32)
            rows = np.broadcast_to(np.arange(d)[None, :], (R, d))
            reps = np.broadcast_to(np.arange(R)[:, None], (R, d))
            dense[rows, reps, matrices.ams_indices] = matrices.ams_signs
            ams = dense.reshape(d, R * p)
        g = np.arange(B, dtype=np.int64)
        return cls(config, matrices, R, d, k, p, B, simhash, ams, g ^ (g >> 1))

    @property
    def fill(self) -> bool:
        """Whether documents fill their empty partitions."""
        return bool(self.config.fill_empty_partitions and self.k > 0)

    def projection(self) -> npt.NDArray[np.float32] | None:
        """The inner projection per repetition, float32 ``(R, d, p)`` (None: identity)."""
        if self.ams is None:
            return None
        return np.ascontiguousarray(self.ams.reshape(self.d, self.R, self.p).transpose(1, 0, 2))

    def count_sketch(self) -> Any:
        """The final Count-Sketch as a scipy CSR matrix ``(final, raw)``, or None."""
        if self.config.final_projection_dimension is None:
            return None
        import scipy.sparse as sp

        m, D = self.matrices, self.config.raw_dimension
        return sp.csr_matrix(
            (m.count_sketch_signs.astype(np.float32), (m.count_sketch_indices, np.arange(D))),
            shape=(self.config.final_projection_dimension, D),
        )
