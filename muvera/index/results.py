"""What :meth:`muvera.Index.search` returns."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from ..stores import Hits
from .records import Records

__all__ = [
    "CELLS_CANDIDATES", "DEFAULT_CANDIDATES", "WIDE_CANDIDATES", "SearchResult", "make_result",
]  # fmt: skip

# Candidates re-ranked by default (`candidates=None`), chosen on SciFact train queries (the
# original tokens, an anisotropic and a raw variant) and checked on held-out data
# (docs/parameters.md): with token cells (FDE + cells; benchmarks/bench_cells.py),
# and with the FDE alone (benchmarks/bench_quality.py --sweep). WIDE_CANDIDATES: with
# token cells in their wide mode (more than SCAN_TOKENS token rows), chosen on half of the
# queries of a 10^6-document index and checked on the other half
# (benchmarks/check_scale_text_cells.py --truth-file; docs/parameters.md).
CELLS_CANDIDATES = 100
WIDE_CANDIDATES = 200
DEFAULT_CANDIDATES = 200


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Results of :meth:`Index.search`, row ``i`` for query ``i``, best first.

    ``ids`` is ``(n_queries, k)`` (int64 for integer ids, object for string ids; ``k``
    clamped to the number of documents) padded with -1; ``scores`` is float32
    ``(n_queries, k)`` padded with ``-inf``: exact MaxSim when
    re-ranked, FDE inner products otherwise. ``payloads`` (when asked for) holds each hit's
    payload dict (None for padding). ``timings``: milliseconds per stage for the whole call
    (``fde_ms`` query FDEs; then ``candidates_ms`` and ``rerank_ms``, or ``exact_ms`` when
    every allowed document was scored, or ``qdrant_ms`` for one Qdrant request).
    """

    ids: npt.NDArray[Any]
    scores: npt.NDArray[np.float32]
    payloads: list[list[dict[str, Any] | None]] | None = None
    timings: dict[str, float] | None = None


def make_result(
    hits: Hits, records: Records, with_payloads: bool, timings: dict[str, float] | None = None
) -> SearchResult:
    """Labels to ids (and payloads, from the store when it keeps them). Labels that are not
    live documents of this index (a Qdrant point written by a writer that died before its
    commit, or deleted by a commit whose clean-up did not run) are dropped, the other hits
    keeping their order."""
    hits = hits.live(records.alive)
    labels, scores = hits.labels, hits.scores
    if records.id_type == "str":
        ids: npt.NDArray[Any] = np.full(labels.shape, -1, dtype=object)
    else:
        ids = np.full(labels.shape, -1, dtype=np.int64)
    found = labels >= 0
    label_ids = records.label_ids
    ids[found] = [label_ids[label] for label in labels[found].tolist()]
    payloads = None
    if with_payloads:  # from the records (the index folder is the truth, whatever the store)
        stored = records.payloads
        payloads = [
            [stored[label] if label >= 0 else None for label in row.tolist()] for row in labels
        ]
    return SearchResult(
        ids=ids,
        scores=np.asarray(scores, np.float32),
        payloads=payloads,
        timings={**(timings or {}), **(hits.timings or {})},
    )
