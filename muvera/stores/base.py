"""The one protocol every store implements, and what it hands back.

A store keeps, under integer labels, each document's FDE and its token vectors, and answers
both stages of a search. :class:`muvera.Index` owns the manifest, the ids and payloads and
the commit; it calls a store only through :class:`Store`. Local stores
(:class:`~muvera.stores.local.LocalStore`: exact, hnswlib) keep the tokens in the index
folder and re-rank with :func:`muvera.scoring.maxsim_spans`; Qdrant keeps both on the
server and runs both stages there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from ..batch import TokenBatch

__all__ = ["Hits", "Labels", "Store", "StoreRecord", "pad_topk"]

Labels = npt.NDArray[np.int64]
Payload = dict[str, Any] | None


@dataclasses.dataclass(frozen=True)
class Hits:
    """Per query, best first: labels int64 (n_q, k) padded with -1, scores
    float32 padded with -inf; payloads when the store keeps them itself (Qdrant); the
    milliseconds each stage of the store took (``timings``), when it says."""

    labels: Labels
    scores: npt.NDArray[np.float32]
    payloads: list[list[Payload]] | None = None
    timings: dict[str, float] | None = None

    def timed(self, **milliseconds: float) -> Hits:
        """These hits with ``milliseconds`` added to their timings."""
        return dataclasses.replace(self, timings={**(self.timings or {}), **milliseconds})

    @classmethod
    def empty(cls, n_q: int, k: int) -> Hits:
        return cls(np.full((n_q, k), -1, np.int64), np.full((n_q, k), -np.inf, np.float32))

    def live(self, alive: npt.NDArray[np.bool_]) -> Hits:
        """Only the hits whose labels are live (``alive[label]``), the others dropped and the
        rest kept in order, padding last: labels read from files or returned by a server
        are not trusted to be this index's live documents."""
        labels = self.labels
        known = (labels >= 0) & (labels < alive.size)
        known[known] = alive[labels[known]]
        if known[labels >= 0].all():
            return self
        order = np.argsort(~known, axis=1, kind="stable")
        payloads = self.payloads
        if payloads is not None:
            payloads = [
                [row[j] if known[i, j] else None for j in order[i]]
                for i, row in enumerate(payloads)
            ]
        return Hits(
            np.take_along_axis(np.where(known, labels, -1), order, axis=1),
            np.take_along_axis(np.where(known, self.scores, -np.inf), order, axis=1).astype(
                np.float32
            ),
            payloads,
            self.timings,
        )


@dataclasses.dataclass(frozen=True)
class StoreRecord:
    """What a store commits: its manifest entry (``manifest["store"]["entry"]``), the
    manifest's ``tokens`` section, and arrays for the generation's state file."""

    entry: dict[str, Any] | None
    tokens: dict[str, Any]
    arrays: dict[str, npt.NDArray[Any]]


class Store(Protocol):
    """What :class:`muvera.Index` needs from a store (labels are assigned by the index:
    new ones always exceed every earlier one)."""

    kind: ClassVar[str]
    filters_payloads: ClassVar[bool]  # applies payload filters itself (else: a label mask)
    options: dict[str, Any]  # recorded in the manifest (no secrets)

    def add(
        self,
        labels: Labels,
        fdes: npt.NDArray[np.float32],
        docs: TokenBatch,
        ids: list[Any],
        payloads: list[Payload],
    ) -> None:
        """Keep ``fdes[i]`` and the tokens of item ``i`` of ``docs`` under ``labels[i]``."""

    def delete(self, labels: Labels) -> None:
        """Stop returning ``labels``."""

    def update_payloads(self, labels: list[int], payloads: list[Payload]) -> None:
        """New payloads of live labels (a store that filters payloads itself keeps them)."""

    def search(
        self,
        q_fdes: npt.NDArray[np.float32] | None,
        queries: TokenBatch,
        k: int,
        candidates: int | None,
        *,
        rerank: bool,
        alive: npt.NDArray[np.bool_],
        query_filter: Any = None,
        restricted: bool = False,
    ) -> Hits:
        """Top ``k`` per query: the FDE top-``candidates`` re-ranked by exact MaxSim
        (``rerank=False``: the FDE top ``k`` with FDE scores); ``candidates=None``
        (``q_fdes`` None): exact MaxSim against every document ``alive`` allows.
        ``restricted``: ``alive`` also excludes live documents (a payload filter), so the
        search must look past them; ``query_filter``: a filter for a store that
        ``filters_payloads``."""

    def check_documents(self, docs: TokenBatch) -> None:
        """Raise :class:`~muvera.MuveraError` when ``docs`` cannot be stored as they are
        (e.g. values beyond float16's range in a float16 store)."""

    def tokens(self, label: int) -> npt.NDArray[np.float32]:
        """The stored token vectors of ``label``, float32 ``(n, d)``."""

    def compact(self, alive: npt.NDArray[np.bool_], generation: int, force: bool) -> bool:
        """Drop the tokens of dead labels (always with ``force``, else when worth it);
        True when something changed (the index then commits)."""

    def save(self, directory: Path, generation: int) -> StoreRecord:
        """Persist what changed since the last save; return what the manifest records."""

    def after_commit(self, generation: int) -> None:
        """The manifest of ``generation`` (from :meth:`save`) is committed: finish what
        had to wait for it (Qdrant: remove the points it deleted)."""

    def recover(self) -> None:
        """Undo what an uncommitted write left outside the index folder and finish what
        the last commit deferred (a writer's open, and after a failed write)."""


def pad_topk(
    scores: npt.NDArray[np.float32], labels: Labels, k: int
) -> tuple[Labels, npt.NDArray[np.float32]]:
    """Top ``k`` of each row of ``scores`` (columns are ``labels``), padded."""
    n_q, n = scores.shape
    out_labels = np.full((n_q, k), -1, dtype=np.int64)
    out_scores = np.full((n_q, k), -np.inf, dtype=np.float32)
    take = min(k, n)
    if take == 0:
        return out_labels, out_scores
    part = (
        np.argpartition(-scores, take - 1, axis=1)[:, :take]
        if take < n
        else np.tile(np.arange(n), (n_q, 1))
    )
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    out_labels[:, :take] = labels[best]
    out_scores[:, :take] = np.take_along_axis(scores, best, axis=1)
    return out_labels, out_scores
