"""FDE configuration: the reference's parameter names, validated, JSON round-trippable."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

from ..errors import MuveraError

__all__ = ["FDEConfig"]

ProjectionType = Literal["identity", "ams_sketch"]
_PROJECTION_TYPES = ("identity", "ams_sketch")
_MAX_RAW_DIMENSION = 2**31 - 1
DEFAULT_AMS_PROJECTION_DIMENSION = 16


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MuveraError(f"FDEConfig.{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        allowed = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise MuveraError(f"FDEConfig.{name} must be {allowed}, got {value}")


@dataclasses.dataclass(frozen=True)
class FDEConfig:
    """Parameters of a Fixed Dimensional Encoding, named as in Google's C++ reference.

    Parameters
    ----------
    dimension : int
        Token-vector dimension ``d`` (>= 1).
    num_repetitions : int, default 20
        Independent repetitions ``R`` (>= 1).
    num_simhash_projections : int, default 5
        SimHash hyperplanes ``k`` per repetition, 0..30; ``2**k`` partitions (0: one).
    projection_type : {"ams_sketch", "identity"}, default "ams_sketch"
        Inner projection of each token before aggregation.
    projection_dimension : int or None, default None
        Inner projection size ``p``. None means 16 for ``ams_sketch`` and ``dimension``
        for ``identity`` (which only accepts None or ``dimension``).
    fill_empty_partitions : bool, default False
        Documents only: an empty partition takes the projected token whose SimHash sign
        bits are nearest in Hamming distance (lowest token index on ties). Queries never fill.
    final_projection_dimension : int or None, default None
        If set, a final Count-Sketch maps the FDE to this many dimensions.
    seed : int, default 42
        Unsigned 32-bit seed; repetition ``r`` uses ``seed + r`` (mod 2**32).

    Examples
    --------
    >>> cfg = FDEConfig(dimension=128)
    >>> cfg.output_dimension
    10240
    >>> FDEConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> FDEConfig(dimension=8, num_simhash_projections=31)
    Traceback (most recent call last):
    ...
    muvera.errors.MuveraError: FDEConfig.num_simhash_projections must be in [0, 30], got 31
    """

    dimension: int
    num_repetitions: int = 20
    num_simhash_projections: int = 5
    projection_type: ProjectionType = "ams_sketch"
    projection_dimension: int | None = None
    fill_empty_partitions: bool = False
    final_projection_dimension: int | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        _check_int("dimension", self.dimension, 1)
        _check_int("num_repetitions", self.num_repetitions, 1)
        _check_int("num_simhash_projections", self.num_simhash_projections, 0, 30)
        if self.projection_type not in _PROJECTION_TYPES:
            raise MuveraError(
                f"FDEConfig.projection_type must be one of {_PROJECTION_TYPES}, "
                f"got {self.projection_type!r}"
            )
        if self.projection_dimension is not None:
            _check_int("projection_dimension", self.projection_dimension, 1)
            if self.projection_type == "identity" and self.projection_dimension != self.dimension:
                raise MuveraError(
                    "FDEConfig.projection_dimension must be None or equal to dimension "
                    f"({self.dimension}) for the identity projection, "
                    f"got {self.projection_dimension}"
                )
        if not isinstance(self.fill_empty_partitions, bool):
            raise MuveraError(
                "FDEConfig.fill_empty_partitions must be a bool, "
                f"got {type(self.fill_empty_partitions).__name__}"
            )
        if self.final_projection_dimension is not None:
            _check_int("final_projection_dimension", self.final_projection_dimension, 1)
        _check_int("seed", self.seed, 0, 2**32 - 1)
        if self.raw_dimension > _MAX_RAW_DIMENSION:
            raise MuveraError(
                "FDEConfig gives num_repetitions * 2**num_simhash_projections * "
                f"projection_dimension = {self.raw_dimension} coordinates, over the "
                f"supported maximum of {_MAX_RAW_DIMENSION}"
            )

    @property
    def block_dimension(self) -> int:
        """Inner projection size ``p`` actually used (resolves ``projection_dimension=None``)."""
        if self.projection_type == "identity":
            return self.dimension
        if self.projection_dimension is None:
            return DEFAULT_AMS_PROJECTION_DIMENSION
        return self.projection_dimension

    @property
    def num_partitions(self) -> int:
        """``2 ** num_simhash_projections``."""
        return 1 << self.num_simhash_projections

    @property
    def raw_dimension(self) -> int:
        """FDE size before the final projection: ``R * 2**k * p``."""
        return self.num_repetitions * self.num_partitions * self.block_dimension

    @property
    def output_dimension(self) -> int:
        """Length of each FDE row this config produces."""
        if self.final_projection_dimension is not None:
            return self.final_projection_dimension
        return self.raw_dimension

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FDEConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`~muvera.MuveraError`."""
        if not isinstance(data, dict):
            raise MuveraError(f"FDEConfig.from_dict needs a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MuveraError(f"FDEConfig.from_dict got unknown fields {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict` (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FDEConfig:
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MuveraError(f"FDEConfig.from_json: invalid JSON ({exc})") from None
        return cls.from_dict(data)
