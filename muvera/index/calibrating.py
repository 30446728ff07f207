"""An index's calibration: chosen at create, fitted at the first add, kept in the manifest.

The manifest's ``calibration`` section is one of

* ``{"kind": "pending", "mode": "auto" | "centre"}``: no document yet; the first add fits;
* ``{"kind": "none", "reason": ..., "anisotropy": float | None}``: the reference FDE;
* ``{"kind": "centre", "version": 1, "mean": [...], "anisotropy", "tokens", "fde",
  "fitted"}``: :class:`~muvera.fde.calibration.CalibratedEncoder` FDEs (format version 3).

An index without the section (made before calibration existed) is ``none``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MuveraError
from ..fde import FDEEncoder
from ..fde.calibration import (
    ANISOTROPY_THRESHOLD,
    MIN_FIT_TOKENS,
    CalibratedEncoder,
    Calibration,
    anisotropy,
    calibration_problem,
)

__all__ = ["decide", "encoder_for", "initial_section"]

_MODES = ("auto", "off", "centre")
_log = logging.getLogger("muvera")


def initial_section(calibration: Any, encoder: FDEEncoder) -> dict[str, Any]:
    """The section of a new index for ``Index.create(..., calibration=...)``."""
    problem = calibration_problem(encoder.config)
    if isinstance(calibration, Calibration):
        if problem is not None:
            raise MuveraError(f"calibration: this FDEConfig cannot be calibrated: {problem}")
        CalibratedEncoder(encoder.config, calibration)  # checks the dimension
        return _centre(calibration, encoder, "given")
    if not isinstance(calibration, str) or calibration not in _MODES:
        raise MuveraError(
            f"calibration must be one of {list(_MODES)} or a fitted Calibration, "
            f"got {calibration!r}"
        )
    if calibration == "off":
        return {"kind": "none", "reason": "calibration='off'", "anisotropy": None}
    if problem is not None:
        if calibration == "centre":
            raise MuveraError(
                f"calibration='centre': this FDEConfig cannot be calibrated: {problem}"
            )
        return {"kind": "none", "reason": f"not applicable: {problem}", "anisotropy": None}
    return {"kind": "pending", "mode": calibration}


def _centre(
    calibration: Calibration, encoder: FDEEncoder | CalibratedEncoder, fitted: str
) -> dict[str, Any]:
    return {**calibration.to_dict(), "fde": encoder.config.to_dict(), "fitted": fitted}


def decide(
    section: dict[str, Any],
    tokens: np.ndarray,
    encoder: FDEEncoder | CalibratedEncoder,
    first: bool,
) -> dict[str, Any] | None:
    """The section after the first add of ``tokens`` (float32 ``(n, d)``), or None when it
    stays as it is. ``first``: the index never held a document (an older version's writer
    may have added some to a pending index: those were not calibrated, so neither is the
    rest). ``mode="centre"`` raises where it cannot fit; ``"auto"`` then keeps the
    reference FDE and says why."""
    if section.get("kind") != "pending":
        return None
    mode = section.get("mode")
    if not first:
        return {"kind": "none", "reason": "documents were added before calibration was fitted",
                "anisotropy": None}  # fmt: skip
    if mode == "centre":
        return _centre(Calibration.fit(tokens), encoder, "centre")
    if tokens.shape[0] < MIN_FIT_TOKENS:
        reason = f"the first add held {tokens.shape[0]} token vectors (< {MIN_FIT_TOKENS})"
        _log.info("calibration skipped: %s; the reference FDE is used", reason)
        return {"kind": "none", "reason": reason, "anisotropy": None}
    ratio = anisotropy(tokens[:: max(1, tokens.shape[0] // 131072)])
    if ratio < ANISOTROPY_THRESHOLD:
        return {"kind": "none", "reason": f"anisotropy {ratio:.3f} < {ANISOTROPY_THRESHOLD}",
                "anisotropy": ratio}  # fmt: skip
    try:
        fitted = Calibration.fit(tokens)
    except MuveraError as exc:
        _log.warning("calibration skipped: %s", exc)
        return {"kind": "none", "reason": str(exc), "anisotropy": ratio}
    _log.info("calibration on: anisotropy %.3f >= %s", ratio, ANISOTROPY_THRESHOLD)
    return _centre(fitted, encoder, "auto")


def encoder_for(section: Any, encoder: FDEEncoder, path: Path) -> FDEEncoder | CalibratedEncoder:
    """The encoder an index with this section uses; a malformed section, or one fitted for
    another FDE config than the index's encoder file, raises :class:`~muvera.MuveraError`."""
    if section is None:
        return encoder
    if not isinstance(section, dict):
        raise MuveraError(f"index {path}: the calibration section is malformed")
    kind = section.get("kind")
    if kind in ("none", "pending"):
        if kind == "pending" and section.get("mode") not in ("auto", "centre"):
            raise MuveraError(f"index {path}: the calibration section is malformed")
        return encoder
    try:
        calibration = Calibration.from_dict(section, encoder.config.dimension)
    except MuveraError as exc:
        raise MuveraError(f"index {path}: {exc}") from None
    if section.get("fde") != encoder.config.to_dict():
        raise MuveraError(
            f"index {path}: its calibration was fitted for another FDE config than its "
            "encoder file holds (the encoder file was replaced?); rebuild the index"
        )
    problem = calibration_problem(encoder.config)
    if problem is not None:
        raise MuveraError(f"index {path}: calibrated, but its FDE config cannot be: {problem}")
    return CalibratedEncoder(encoder.config, calibration)
