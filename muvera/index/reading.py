"""Reading an index: :class:`ReadMethods` (``get``, ``tokens``, ``search``, ``search_exact``),
mixed into :class:`muvera.Index`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..batch import TokenBatch, checked_batch
from ..errors import MuveraError
from ..fde import FDEEncoder
from ..fde.calibration import CalibratedEncoder
from ..stores import Hits, Store
from .filters import allowed_mask, check_filter, filter_key, to_point_filter
from .records import Records
from .results import (
    CELLS_CANDIDATES,
    DEFAULT_CANDIDATES,
    WIDE_CANDIDATES,
    SearchResult,
    make_result,
)

__all__ = ["Document", "ReadMethods"]


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise MuveraError(f"{name} must be a positive int, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Document:
    """One stored document (:meth:`muvera.Index.get`): its id, token vectors (float32
    ``(n_tokens, d)``, as stored: float16 precision in a float16 index) and payload."""

    id: int | str
    tokens: npt.NDArray[np.float32]
    payload: dict[str, Any] | None


class ReadMethods:
    """Mixed into :class:`muvera.Index`, which provides these attributes."""

    path: Path
    manifest: dict[str, Any]
    encoder: FDEEncoder | CalibratedEncoder
    store: Store
    records: Records
    token_dimension: int
    _filter_cache: tuple[Any, Any] = (None, None)

    def __len__(self) -> int:
        raise NotImplementedError

    def _labels(self, ids: Sequence[int | str]) -> list[int]:
        if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
            raise MuveraError(f"ids must be a list of ints or strings, got {type(ids).__name__}")
        known = self.records.id_to_label
        keys = [x.item() if isinstance(x, np.generic) else x for x in ids]
        missing = [x for x in keys if not isinstance(x, (int, str)) or x not in known]
        if missing:
            raise MuveraError(f"unknown ids {missing[:5]}{'...' if len(missing) > 5 else ''}")
        return [known[x] for x in keys]

    def tokens(self, doc_id: int | str) -> npt.NDArray[np.float32]:
        """The stored token vectors of one document, float32 ``(n_tokens, d)``."""
        return self.store.tokens(self._labels([doc_id])[0])

    def get(self, ids: Sequence[int] | Sequence[str]) -> list[Document]:
        """The documents of ``ids`` (in that order): token vectors and payloads. An
        unknown id raises :class:`~muvera.MuveraError` naming it."""
        labels = self._labels(ids)
        return [
            Document(self.records.label_ids[label], self.store.tokens(label),
                     self.records.payloads[label])
            for label in labels
        ]  # fmt: skip

    def search(
        self,
        query_multivectors: Any,
        k: int = 10,
        candidates: int | None = None,
        *,
        rerank: bool = True,
        lengths: Any = None,
        mask: Any = None,
        with_payloads: bool = False,
        query_filter: Any = None,
    ) -> SearchResult:
        """Two-stage search: ``candidates`` documents from the store's first stage, then
        exact MaxSim on their stored token vectors, keeping the top ``k``.

        The first stage is the FDE top-``candidates``; with token cells (local stores, the
        default) the FDE's top quarter, filled up with the documents that approximate MaxSim
        by token cells ranks highest (:mod:`muvera.stores.cell_file`). ``candidates=None``
        takes :attr:`default_candidates`.

        ``query_multivectors`` takes the encoder's batch forms (a list of ``(n_i, d)`` arrays,
        or a padded array with ``lengths``/``mask``). ``rerank=False`` returns the FDE top
        ``k`` with FDE scores. ``query_filter`` keeps only documents whose payload passes
        it, on every store (a dict in Qdrant's filter syntax: :mod:`muvera.index.filters`;
        the qdrant store also takes a ``qdrant_client.models.Filter``). The local stores
        walk the graph past the documents the filter excludes (so ``k`` hits come back
        while ``k`` documents pass), or score every allowed document exactly when few pass.

        ``candidates`` below ``k`` is raised to ``k``. ``k`` and ``candidates`` larger than
        the number of documents are clamped to it (at least 1): the results then have
        ``min(k, len(index))`` columns, so a huge ``k`` costs what the index holds, not what
        was asked for. Fewer hits than columns (an empty index, a filter) are padded with
        -1 / -inf.
        """
        if candidates is None:
            candidates = self.default_candidates
        for name, value in (("k", k), ("candidates", candidates)):
            _check_positive(name, value)
        limit = max(len(self), 1)
        k, candidates = min(k, limit), min(max(candidates, k), limit)
        queries = self._check_queries(query_multivectors, lengths, mask)
        alive, store_filter, restricted = self._filter(query_filter)
        t0 = time.perf_counter()
        q_fdes = self.encoder.encode_queries(queries)
        fde_ms = 1000 * (time.perf_counter() - t0)
        hits = self.store.search(
            q_fdes, queries, k, candidates, rerank=rerank, alive=alive,
            query_filter=store_filter, restricted=restricted,
        )  # fmt: skip
        return make_result(hits, self.records, with_payloads, {"fde_ms": fde_ms})

    @property
    def default_candidates(self) -> int:
        """Documents re-ranked when ``search`` is not told (``muvera.index.results``): 100
        when the index has fitted token cells that score every document, 200 when they run
        their wide mode (more than ``SCAN_TOKENS`` token rows) and without cells."""
        if not getattr(self.store, "uses_cells", False):
            return DEFAULT_CANDIDATES
        return WIDE_CANDIDATES if getattr(self.store, "wide", False) else CELLS_CANDIDATES

    def search_exact(
        self,
        query_multivectors: Any,
        k: int = 10,
        *,
        lengths: Any = None,
        mask: Any = None,
        with_payloads: bool = False,
        query_filter: Any = None,
    ) -> SearchResult:
        """Brute-force exact MaxSim against every stored document (that passes
        ``query_filter``): the ranking that :meth:`search` approximates (ground truth for
        evaluation, or small corpora).

        Takes the same query forms as :meth:`search` and returns the same
        :class:`SearchResult`. Cost grows with the corpus: every stored token vector is
        read once per call, in blocks, for all queries of the call together. The qdrant
        store runs it on the server as a full MaxSim scan of the ``tokens`` vectors. ``k`` is
        clamped as in :meth:`search`.
        """
        _check_positive("k", k)
        k = min(k, max(len(self), 1))
        queries = self._check_queries(query_multivectors, lengths, mask)
        alive, store_filter, restricted = self._filter(query_filter)
        hits = self.store.search(
            None, queries, k, None, rerank=True, alive=alive, query_filter=store_filter,
            restricted=restricted,
        )  # fmt: skip
        return self._result(hits, with_payloads)

    def _filter(self, query_filter: Any) -> tuple[npt.NDArray[np.bool_], Any, bool]:
        """The documents a search may return (a mask over labels), the filter the store
        applies itself, and whether the mask excludes live documents."""
        alive = self.records.alive
        if query_filter is None:
            return alive, None, False
        filters_itself = getattr(self.store, "filters_payloads", False)
        if not isinstance(query_filter, dict):
            if filters_itself:  # a store-native filter object (qdrant_client.models.Filter)
                return alive, query_filter, False
            raise MuveraError(
                "query_filter must be a dict in Qdrant's filter syntax (muvera.index.filters)"
            )
        checked = check_filter(query_filter)
        if filters_itself:
            return alive, to_point_filter(checked, self.records.id_to_label), False
        key = (filter_key(checked), self.manifest["generation"], self.records.next_label,
               len(self.records))  # fmt: skip
        cached_key, mask = self._filter_cache  # one read: searches may run in threads
        if cached_key != key:  # one filter used for many searches: computed once
            records = self.records
            mask = allowed_mask(checked, records.label_ids, records.payloads, records.alive)
            self._filter_cache = (key, mask)
        return mask, None, True

    def _check_queries(self, query_multivectors: Any, lengths: Any, mask: Any) -> TokenBatch:
        return checked_batch(
            query_multivectors, self.token_dimension, lengths, mask, "search", "query"
        )

    def _result(self, hits: Hits, with_payloads: bool) -> SearchResult:
        return make_result(hits, self.records, with_payloads)
