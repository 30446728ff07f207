"""What :meth:`muvera.Index.search` returns."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SearchResult"]


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Results of :meth:`Index.search`, row ``i`` for query ``i``, best first.

    ``ids`` is ``(n_queries, k)`` (int64 for integer ids, object for string ids) padded with
    -1; ``scores`` is float32 ``(n_queries, k)`` padded with ``-inf``: exact MaxSim when
    re-ranked, FDE inner products otherwise. ``payloads`` (when asked for) holds each hit's
    payload dict (None for padding).
    """

    ids: npt.NDArray[Any]
    scores: npt.NDArray[np.float32]
    payloads: list[list[dict[str, Any] | None]] | None = None
