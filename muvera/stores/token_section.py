"""The token section of a local store's manifest entry, read back and checked before any
kernel reads the token file: the quantized stores' centre and the first residual row
(token dtype ``"residual4"``, :mod:`muvera.token_codes`), and the float16 range check of
documents to add."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..batch import TokenBatch
from ..errors import MuveraError
from ..token_codes import CODE_KINDS, RESIDUAL_KINDS
from .cell_file import TokenCells

__all__ = ["check_float16_range", "read_centre", "read_residual"]

_FLOAT16_MAX = float(np.finfo(np.float16).max)


def check_float16_range(docs: TokenBatch, what: str = "add") -> None:
    """Raise when a document has token values that float16 cannot hold (+-65504)."""
    if docs.tokens.shape[0] == 0:
        return
    top = np.abs(docs.tokens).max(axis=1)
    if float(top.max()) <= _FLOAT16_MAX:
        return
    row = int(np.argmax(top > _FLOAT16_MAX))
    item = int(np.searchsorted(docs.offsets, row, side="right")) - 1
    raise MuveraError(
        f"{what}: document {item} has token values beyond float16's range (+-65504); "
        'scale the vectors or create the index with token_dtype="float32"'
    )


def read_centre(
    value: Any, token_format: str, dimension: int, committed_bytes: int
) -> npt.NDArray[np.float32] | None:
    """The quantized stores' centre: ``dimension`` finite numbers, present once the token
    file holds rows (fitted at the first add); None for float stores.

    >>> read_centre([0.5, 1], "int8", 2, 12)
    array([0.5, 1. ], dtype=float32)
    """
    if token_format not in CODE_KINDS:
        return None
    if value is None and committed_bytes == 0:
        return None
    if (
        not isinstance(value, list)
        or len(value) != dimension
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        or not np.isfinite(np.asarray(value, np.float64)).all()
        or np.abs(np.asarray(value, np.float64)).max(initial=0) > 3e38
    ):
        raise MuveraError(f"the token section's centre must be {dimension} finite numbers")
    return np.asarray(value, np.float32)


def read_residual(
    value: Any,
    token_format: str,
    cells: TokenCells | None,
    rows: int,
    centre: npt.NDArray[np.float32] | None,
) -> int | None:
    """The first token row stored as a residual (token dtype "residual4", "residual4lm" or
    "residual2"): present exactly when the cells are fitted, a row number in ``0 ..
    rows``; None otherwise.

    >>> read_residual(None, "int4", None, 10, None) is None
    True
    """
    if token_format not in RESIDUAL_KINDS:
        if value is not None:
            raise MuveraError("the token section's residual_from needs a residual token dtype")
        return None
    if cells is None:
        raise MuveraError(f"token dtype {token_format} needs the token cells")
    if not cells.fitted:
        if value is not None:
            raise MuveraError("the token section's residual_from needs fitted token cells")
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= rows:
        raise MuveraError(f"the token section's residual_from must be a row in 0 .. {rows}")
    if centre is None:
        raise MuveraError(f"{token_format} token rows need the token section's centre")
    return value
