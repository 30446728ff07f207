"""Calibration: FDEs of tokens centred on the corpus mean, for anisotropic token spaces.

Token vectors of many late-interaction models share a large common component (the
ModernBERT-based PyLate models, raw un-normalised vectors). SimHash then puts almost every
token in the same few partitions, and the AMS sketch's error, proportional to the token
norms, drowns the part of each inner product that differs between documents: the FDE
ranking collapses while exact MaxSim does not move.

With ``mu`` the mean corpus token, MaxSim ranks documents exactly as

    sum_i max_j <q_i, d_j - mu>  =  sum_i max_j [<q_i - mu, d_j - mu> + <mu, d_j - mu>]

(subtracting ``mu`` from every document token changes each query token's best match by
nothing and its score by the same ``<q_i, mu>`` for every document). The calibrated FDE
encodes that right-hand side: partitions and the sketched part from the centred tokens
``x - mu``, and the ``<mu, d_j - mu>`` term kept exactly, one coordinate per partition
block (the query's token count there, the document's mean of ``<mu, d_j - mu>``). The
sketch keeps ``p - 1`` of the block's ``p`` coordinates, so the FDE keeps its length.

The reference's semantics are untouched when calibration is off (every index made before
this module, and the default for token spaces without a common component).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from ..batch import TokenBatch
from ..errors import MuveraError
from .config import FDEConfig
from .encoder import FDEEncoder
from .plan import gray_decode

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "MIN_FIT_TOKENS",
    "CalibratedEncoder",
    "Calibration",
    "anisotropy",
    "calibration_problem",
]

CALIBRATION_VERSION = 1
MIN_FIT_TOKENS = 1000
ANISOTROPY_THRESHOLD = 0.5
_FIT_SAMPLE = 1 << 17
_TOKEN_BLOCK = 8192


def anisotropy(tokens: npt.NDArray[Any]) -> float:
    """``|mean token| / sqrt(mean |token|^2)``: 0 for tokens spread evenly around the
    origin, 1 when every token is the same vector.

    >>> round(anisotropy(np.array([[1.0, 0.0], [0.0, 1.0]])), 3)
    0.707
    >>> anisotropy(np.array([[2.0, 0.0], [-2.0, 0.0]]))
    0.0
    """
    x = np.asarray(tokens, dtype=np.float64)
    power = float(np.mean(np.einsum("ij,ij->i", x, x)))
    if power <= 0.0:
        return 0.0
    return float(np.linalg.norm(x.mean(axis=0)) / np.sqrt(power))


def calibration_problem(config: FDEConfig) -> str | None:
    """Why ``config`` cannot be calibrated (None if it can)."""
    if config.projection_type != "ams_sketch":
        return "it needs projection_type='ams_sketch'"
    if config.block_dimension < 2:
        return "it needs a projection_dimension of at least 2"
    if config.final_projection_dimension is not None:
        return "it does not combine with final_projection_dimension"
    if config.fill_empty_partitions:
        return "it does not combine with fill_empty_partitions"
    return None


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A fitted centring: ``mean`` float32 ``(d,)``, the ``anisotropy`` and token count of
    the sample it was fitted on.

    >>> rng = np.random.default_rng(0)
    >>> cal = Calibration.fit(rng.standard_normal((2000, 8)) + 3.0)
    >>> cal.mean.shape, cal.anisotropy > 0.9, cal.tokens
    ((8,), True, 2000)
    >>> Calibration.from_dict(cal.to_dict()) == cal
    True
    """

    mean: npt.NDArray[np.float32]
    anisotropy: float
    tokens: int

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Calibration)
            and np.array_equal(self.mean, other.mean)
            and (self.anisotropy, self.tokens) == (other.anisotropy, other.tokens)
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def fit(cls, tokens: Any, *, seed: int = 0) -> Calibration:
        """Fit on token vectors ``(n, d)`` (a corpus sample; at most 131,072 rows are used,
        drawn with ``seed``). Too few tokens (< 1,000), non-finite values or tokens without
        spread (all equal) raise :class:`~muvera.MuveraError`."""
        x = np.asarray(tokens)
        if x.ndim != 2 or x.shape[1] < 1 or not np.issubdtype(x.dtype, np.number):
            raise MuveraError(f"Calibration.fit needs a (n, d) float array, got shape {x.shape}")
        if x.shape[0] < MIN_FIT_TOKENS:
            raise MuveraError(
                f"Calibration.fit needs at least {MIN_FIT_TOKENS} token vectors, got "
                f"{x.shape[0]}: add more documents first (or calibration='off')"
            )
        if x.shape[0] > _FIT_SAMPLE:
            rows = np.random.default_rng(seed).choice(x.shape[0], _FIT_SAMPLE, replace=False)
            x = x[np.sort(rows)]
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise MuveraError("Calibration.fit: the token sample holds NaN or infinite values")
        mean = x.mean(axis=0)
        spread = float(np.sqrt(np.mean(np.sum((x - mean) ** 2, axis=1))))
        scale = float(np.sqrt(np.mean(np.sum(x**2, axis=1))))
        if spread <= 1e-6 * max(scale, 1e-30):
            raise MuveraError(
                "Calibration.fit: every token vector of the sample is the same; centring "
                "would leave nothing to partition (calibration='off' keeps the reference FDE)"
            )
        return cls(mean.astype(np.float32), anisotropy(x), int(x.shape[0]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible (float32 values survive the round trip exactly)."""
        return {
            "version": CALIBRATION_VERSION,
            "kind": "centre",
            "mean": [float(v) for v in self.mean],
            "anisotropy": float(self.anisotropy),
            "tokens": int(self.tokens),
        }

    @classmethod
    def from_dict(cls, data: Any, dimension: int | None = None) -> Calibration:
        """Inverse of :meth:`to_dict`, every field checked (``dimension``: the mean's)."""
        if not isinstance(data, dict) or data.get("kind") != "centre":
            raise MuveraError(f"calibration section is malformed: {str(data)[:80]!r}")
        if data.get("version") != CALIBRATION_VERSION:
            raise MuveraError(
                f"calibration version {data.get('version')!r} is not supported by this "
                f"muvera (it reads version {CALIBRATION_VERSION}); upgrade muvera"
            )
        mean, ratio, tokens = data.get("mean"), data.get("anisotropy"), data.get("tokens")
        if (
            not isinstance(mean, list)
            or not mean
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in mean)
            or not isinstance(ratio, (int, float))
            or not isinstance(tokens, int)
            or isinstance(tokens, bool)
            or tokens < 1
        ):
            raise MuveraError("calibration section has a malformed mean, anisotropy or tokens")
        values = np.array(mean, dtype=np.float64)
        if not (np.isfinite(values).all() and np.isfinite(ratio)) or np.abs(values).max() > 3e38:
            raise MuveraError("calibration mean holds NaN or infinite values")
        if dimension is not None and values.shape[0] != dimension:
            raise MuveraError(
                f"calibration mean has {values.shape[0]} dimensions; the index's tokens "
                f"have {dimension}"
            )
        return cls(values.astype(np.float32), float(ratio), tokens)


class CalibratedEncoder:
    """FDEs of centred tokens with the mean's term kept exactly (see the module doc).

    Same length as ``config``'s FDE; built from ``config`` with the sketch one coordinate
    narrower. Takes :class:`~muvera.batch.TokenBatch` es of numpy float32 tokens.

    >>> cfg = FDEConfig(dimension=4, num_repetitions=2, num_simhash_projections=1,
    ...                 projection_dimension=3)
    >>> rng = np.random.default_rng(0)
    >>> enc = CalibratedEncoder(cfg, Calibration.fit(rng.standard_normal((1000, 4)) + 5))
    >>> enc.encode_documents(TokenBatch.from_items([rng.standard_normal((3, 4))])).shape
    (1, 12)
    """

    def __init__(self, config: FDEConfig, calibration: Calibration) -> None:
        problem = calibration_problem(config)
        if problem is not None:
            raise MuveraError(f"this FDEConfig cannot be calibrated: {problem}")
        if calibration.mean.shape != (config.dimension,):
            raise MuveraError(
                f"the calibration was fitted on {calibration.mean.shape[0]}-d tokens; this "
                f"encoder takes {config.dimension}-d ones"
            )
        self.config = config
        self.calibration = calibration
        inner = dataclasses.replace(config, projection_dimension=config.block_dimension - 1)
        self.inner = FDEEncoder(inner)
        self.mean = calibration.mean.astype(np.float32)

    def __repr__(self) -> str:
        return f"CalibratedEncoder({self.config!r}, anisotropy={self.calibration.anisotropy:.3f})"

    @property
    def output_dimension(self) -> int:
        return self.config.output_dimension

    @property
    def kernel(self) -> str:
        return self.inner.kernel

    def encode_queries(self, batch: TokenBatch) -> npt.NDArray[np.float32]:
        """Query FDEs ``(len(batch), output_dimension)``: sums per partition."""
        return self._encode(batch, document=False)

    def encode_documents(self, batch: TokenBatch) -> npt.NDArray[np.float32]:
        """Document FDEs ``(len(batch), output_dimension)``: means per partition."""
        return self._encode(batch, document=True)

    def _encode(self, batch: TokenBatch, document: bool) -> npt.NDArray[np.float32]:
        tokens = np.asarray(batch.tokens, dtype=np.float32)
        centred = tokens - self.mean
        part = TokenBatch(0, centred, batch.lengths)
        sketched = (
            self.inner.encode_documents(part) if document else self.inner.encode_queries(part)
        )
        plan = self.inner.plan
        R, B = plan.R, plan.B
        rows = self._rows(centred, batch.lengths)
        n_rows = len(batch) * R * B
        weights = (centred @ self.mean).astype(np.float64) if document else None
        exact = np.bincount(
            rows.ravel(), None if weights is None else np.repeat(weights, R), n_rows
        ).astype(np.float64)
        if document:
            exact = exact / np.maximum(np.bincount(rows.ravel(), minlength=n_rows), 1)
        out = np.empty((n_rows, plan.p + 1), dtype=np.float32)
        out[:, :-1] = sketched.reshape(n_rows, plan.p)
        out[:, -1] = exact
        return out.reshape(len(batch), -1)

    def _rows(
        self, centred: npt.NDArray[np.float32], lengths: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """Block row ``(item * R + r) * B + partition`` of each token and repetition."""
        plan = self.inner.plan
        R, B, k = plan.R, plan.B, plan.k
        owner = np.repeat(np.arange(lengths.shape[0], dtype=np.int64), lengths)
        rows = np.empty((centred.shape[0], R), dtype=np.int64)
        base = np.arange(R, dtype=np.int64) * B
        for s in range(0, centred.shape[0], _TOKEN_BLOCK):
            e = min(centred.shape[0], s + _TOKEN_BLOCK)
            bits = centred[s:e] @ plan.simhash > 0  # column j * R + r
            code = np.zeros((e - s, R), dtype=np.int64)
            for j in range(k):
                code = (code << 1) | bits[:, j * R : (j + 1) * R]
            rows[s:e] = (owner[s:e, None] * R * B + base) + gray_decode(code, k)
        return rows
