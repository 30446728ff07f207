"""The random matrices of an FDE, materialised from a config exactly as the reference draws them."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from .config import FDEConfig
from .rng import MT19937, normal_float, uniform_index_and_sign

__all__ = ["FDEMatrices", "draw_matrices"]


@dataclasses.dataclass(frozen=True, eq=False)
class FDEMatrices:
    """Materialised randomness of an encoder.

    Attributes
    ----------
    simhash : float32, shape ``(R, d, k)``
        Gaussian hyperplanes of each repetition.
    ams_indices : int64, shape ``(R, d)``; ``ams_signs`` : int8, shape ``(R, d)``
        AMS sketch: input coordinate ``i`` of repetition ``r`` goes to column
        ``ams_indices[r, i]`` with sign ``ams_signs[r, i]``. Empty (``(R, 0)``) for identity.
    count_sketch_indices : int64, shape ``(raw_dimension,)``; ``count_sketch_signs`` : int8
        Final Count-Sketch; empty (``(0,)``) when no final projection is configured.
    """

    simhash: npt.NDArray[np.float32]
    ams_indices: npt.NDArray[np.int64]
    ams_signs: npt.NDArray[np.int8]
    count_sketch_indices: npt.NDArray[np.int64]
    count_sketch_signs: npt.NDArray[np.int8]

    def check(self, config: FDEConfig) -> None:
        """Raise ValueError if the shapes or values do not fit ``config``."""
        R, d, k = config.num_repetitions, config.dimension, config.num_simhash_projections
        p = config.block_dimension
        expect_ams = (R, d) if config.projection_type == "ams_sketch" else (R, 0)
        expect_cs = (config.raw_dimension,) if config.final_projection_dimension else (0,)
        checks = [
            ("simhash", self.simhash.shape, (R, d, k)),
            ("ams_indices", self.ams_indices.shape, expect_ams),
            ("ams_signs", self.ams_signs.shape, expect_ams),
            ("count_sketch_indices", self.count_sketch_indices.shape, expect_cs),
            ("count_sketch_signs", self.count_sketch_signs.shape, expect_cs),
        ]
        for name, got, want in checks:
            if tuple(got) != want:
                raise ValueError(f"matrix {name} has shape {tuple(got)}, config needs {want}")
        if not np.all(np.isfinite(self.simhash)):
            raise ValueError("matrix simhash has non-finite values")
        if self.ams_indices.size and (self.ams_indices.min() < 0 or self.ams_indices.max() >= p):
            raise ValueError(f"matrix ams_indices has values outside [0, {p})")
        f = config.final_projection_dimension or 0
        cs = self.count_sketch_indices
        if cs.size and (cs.min() < 0 or cs.max() >= f):
            raise ValueError(f"matrix count_sketch_indices has values outside [0, {f})")
        for name, signs in (
            ("ams_signs", self.ams_signs),
            ("count_sketch_signs", self.count_sketch_signs),
        ):
            if signs.size and not np.all(np.abs(signs.astype(np.int16)) == 1):
                raise ValueError(f"matrix {name} must hold only -1 and +1")


def draw_matrices(config: FDEConfig) -> FDEMatrices:
    """Draw every random matrix of ``config`` with the reference's generators.

    Examples
    --------
    >>> m = draw_matrices(FDEConfig(dimension=4, num_repetitions=2, num_simhash_projections=3))
    >>> m.simhash.shape, m.ams_indices.shape, m.count_sketch_indices.shape
    ((2, 4, 3), (2, 4), (0,))
    """
    R, d, k = config.num_repetitions, config.dimension, config.num_simhash_projections
    p = config.block_dimension
    simhash = np.zeros((R, d, k), dtype=np.float32)
    ams = config.projection_type == "ams_sketch"
    ams_indices = np.zeros((R, d if ams else 0), dtype=np.int64)
    ams_signs = np.zeros((R, d if ams else 0), dtype=np.int8)
    for r in range(R):
        seed = (config.seed + r) & 0xFFFFFFFF
        if k > 0:
            # Eigen fills the column-major d x k matrix column by column.
            simhash[r] = normal_float(MT19937(seed), d * k).reshape(k, d).T
        if ams:
            ams_indices[r], ams_signs[r] = uniform_index_and_sign(MT19937(seed), d, p)
    if config.final_projection_dimension is not None:
        cs_indices, cs_signs = uniform_index_and_sign(
            MT19937(config.seed), config.raw_dimension, config.final_projection_dimension
        )
    else:
        cs_indices, cs_signs = np.zeros(0, np.int64), np.zeros(0, np.int8)
    return FDEMatrices(simhash, ams_indices, ams_signs, cs_indices, cs_signs)
