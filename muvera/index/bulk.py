"""Bulk writes: many adds, upserts and deletes under one commit (:meth:`BulkMethods.bulk`).

A commit makes every change durable and visible to readers, and costs what the store's
commit costs: for the hnswlib store that is a rewrite of the whole graph file, so adding a
large corpus in many small ``add`` calls spends its time rewriting. Inside ``bulk()``
changes are applied to the writer's in-memory state (token vectors appended to the token
file, FDEs to the graph) and committed once at the end, or every ``commit_every`` added
documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import MuveraError

__all__ = ["BulkMethods"]


class BulkMethods:
    """The ``bulk()`` context of :class:`~muvera.Index` (a mixin)."""

    _bulk: dict[str, Any] | None = None

    def _check_writable(self) -> None:  # provided by Index
        raise NotImplementedError

    def _commit(self) -> None:  # provided by Index
        raise NotImplementedError

    def _load(self, verify: bool = False) -> None:  # provided by Index
        raise NotImplementedError

    def _compact(self, force: bool) -> None:  # provided by Index
        raise NotImplementedError

    @contextmanager
    def bulk(self, commit_every: int | None = None) -> Iterator[Any]:
        """Apply the adds, upserts and deletes made inside with one commit at the end
        (and one each time ``commit_every`` documents have been added since the last).

        Until it commits, a change is in this writer's records (``len``, ``in``, ``get``)
        and, with the local stores, its searches (Qdrant searches committed points only),
        never in a reader's, and a crash loses it (never anything committed before). If
        the block raises, or a write inside fails, the index returns to its last commit:
        changes made inside and not yet committed are dropped. Bulks do not nest.

        >>> import tempfile
        >>> import numpy as np
        >>> from muvera import FDEConfig, Index
        >>> docs = [np.eye(4, dtype=np.float32)[i : i + 2] for i in range(3)]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with Index.create(tmp + "/ix", FDEConfig(dimension=4), store="exact") as ix:
        ...         before = ix.manifest["generation"]
        ...         with ix.bulk():
        ...             for i, doc in enumerate(docs):
        ...                 ix.add([i], [doc])
        ...         commits = ix.manifest["generation"] - before
        >>> commits
        1
        """
        self._check_writable()
        if commit_every is not None and (
            isinstance(commit_every, bool) or not isinstance(commit_every, int) or commit_every < 1
        ):
            raise MuveraError(f"commit_every must be a positive int or None, got {commit_every!r}")
        if self._bulk is not None:
            raise MuveraError("bulk() does not nest")
        self._bulk = {"pending": 0, "changed": False, "every": commit_every}
        try:
            yield self
            if self._bulk["changed"]:
                self._commit()
                self._compact(force=False)  # what deletes inside would have triggered
        except BaseException:
            self._load()  # back to the last commit
            raise
        finally:
            self._bulk = None

    def _commit_change(self, added: int) -> None:
        """Commit a change now, or, inside :meth:`bulk`, when it is due."""
        bulk = self._bulk
        if bulk is None:
            self._commit()
            return
        bulk["pending"] += added
        bulk["changed"] = True
        if bulk["every"] is not None and bulk["pending"] >= bulk["every"]:
            self._commit()
            bulk["pending"], bulk["changed"] = 0, False
