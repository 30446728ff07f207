"""Postings of the token cells (:mod:`muvera.cells`) and the probe that reads them: the
documents that have a token in a query token's best cells, with PLAID's pruned centroid
interaction as a rough score, and the best of them kept for the cells' ranking
(:mod:`muvera.stores.cell_file`, large indexes' first stage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from . import native
from .errors import MuveraError

__all__ = ["SPLIT_DOCS", "Postings", "probe", "probe_best"]

SPLIT_DOCS = 1 << 16  # documents from which probe_best splits them between threads


@dataclass(frozen=True)
class Postings:
    """For every cell, the labels of the documents with a token in it, each once:
    cell ``c``'s labels are ``labels[bounds[c]:bounds[c + 1]]`` (int64 ``bounds``
    ``(n_cells + 1,)``, int32 ``labels``), in the order the documents were given."""

    bounds: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int32]

    @classmethod
    def build(
        cls,
        codes: npt.NDArray[np.uint16],
        n_cells: int,
        labels: npt.NDArray[np.int64],
        offsets: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
        *,
        use_native: bool = True,
    ) -> Postings:
        """Postings of documents ``labels`` (0 .. 2**31 - 1), document ``labels[j]`` being
        codes ``offsets[j] .. + lengths[j]``. A code ``>= n_cells`` or a span outside
        ``codes`` raises :class:`~muvera.MuveraError` (codes come from files). Compiled
        kernel when built, else numpy (the same lists).

        >>> codes = np.array([1, 1, 0, 1], np.uint16)
        >>> p = Postings.build(codes, 2, np.array([5, 7]), np.array([0, 2]), np.array([2, 2]))
        >>> p.bounds.tolist(), p.labels.tolist()
        ([0, 1, 3], [7, 5, 7])
        """
        labels, offsets, lengths = (
            np.ascontiguousarray(a, dtype=np.int64) for a in (labels, offsets, lengths)
        )
        codes = np.ascontiguousarray(codes, dtype=np.uint16)
        bounds = np.zeros(n_cells + 1, dtype=np.int64)
        kernel = native.load() if use_native else None
        if kernel is not None:
            total = kernel.cell_postings(codes, n_cells, labels, offsets, lengths, bounds, None)
            out = np.empty(max(total, 0), dtype=np.int32)
            if total >= 0:
                total = kernel.cell_postings(codes, n_cells, labels, offsets, lengths, bounds, out)
            if total < 0:
                raise MuveraError("token cells: a code or a span does not fit the cell file")
            return cls(bounds, out)
        ends = offsets + lengths
        if labels.size and (
            (offsets < 0).any() or (lengths < 0).any() or int(ends.max()) > codes.shape[0]
            or int(labels.min()) < 0 or int(labels.max()) > np.iinfo(np.int32).max
        ):  # fmt: skip
            raise MuveraError("token cells: a span does not fit the cell file")
        rows = np.concatenate([np.arange(o, e) for o, e in zip(offsets, ends, strict=True)] or
                              [np.zeros(0, np.int64)])  # fmt: skip
        cell = codes[rows].astype(np.int64)
        if cell.size and int(cell.max()) >= n_cells:
            raise MuveraError("token cells: a code does not fit the cell file")
        doc = np.repeat(np.arange(labels.size), lengths)
        pairs = np.unique(cell * max(labels.size, 1) + doc)  # by cell, then document order
        cell, doc = np.divmod(pairs, max(labels.size, 1))
        bounds[1:] = np.cumsum(np.bincount(cell, minlength=n_cells))
        return cls(bounds, labels[doc].astype(np.int32))

    @property
    def n_cells(self) -> int:
        return int(self.bounds.shape[0]) - 1


def _probed_cells(
    table: npt.NDArray[np.float32], n_tokens: int, n_probe: int, kernel: Any
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The ``n_probe`` best cells of each of the first ``n_tokens`` columns of ``table``
    (ties to the lower cell) and their values: int64 / float32 ``(n_tokens, n_probe)``."""
    n_probe = max(1, min(n_probe, table.shape[0]))
    cells = np.empty((n_tokens, n_probe), dtype=np.int64)
    vals = np.empty((n_tokens, n_probe), dtype=np.float32)
    if (
        kernel is not None
        and table.dtype == np.float32
        and table.flags.c_contiguous
        and kernel.cell_top(table, n_tokens, cells, vals) == 0
        and (cells >= 0).all()  # else a column without a finite value: numpy decides
    ):  # one pass in row order, no transposed copy
        return cells, vals
    values = np.array(table[:, :n_tokens].T, dtype=np.float32, order="C")  # (tokens, cells)
    rows = np.arange(n_tokens)
    for j in range(n_probe):  # n_probe is small: argmax passes, cheaper than a partition
        best = np.argmax(values, axis=1)
        cells[:, j] = best
        vals[:, j] = values[rows, best]
        values[rows, best] = -np.inf
    return cells, vals


def _fresh_scratch(n_docs: int) -> tuple[npt.NDArray[Any], ...]:
    """The probe kernel's (score float32, stamp int32, touched int64) arrays of ``n_docs``."""
    return np.zeros(n_docs, np.float32), np.zeros(n_docs, np.int32), np.empty(n_docs, np.int64)


def _reach(
    kernel: Any,
    table: npt.NDArray[np.float32],
    postings: list[Postings],
    cells: npt.NDArray[np.int64],
    vals: npt.NDArray[np.float32],
    score: npt.NDArray[np.float32],
    stamp: npt.NDArray[np.int32],
    touched: npt.NDArray[np.int64],
) -> int:
    """The kernel's probe of ``cells`` / ``vals`` ``(n_tokens, n_probe)`` over every list
    of ``postings``: the count of documents reached (``touched[:count]``), their scores and
    stamps left in ``score`` / ``stamp``; on bad postings, scratch zeroed and an error."""
    n_tokens, n_probe = cells.shape
    starts = np.arange(0, n_probe * n_tokens + 1, n_probe, dtype=np.int64)
    reached = 0
    for p in postings:  # one list: a label reached from two keeps its first stamp
        got = -3 if p.bounds.shape[0] != table.shape[0] + 1 else kernel.cell_probe(
            p.bounds, p.labels, cells.ravel(), vals.ravel(), starts, score, stamp,
            touched[reached:],
        )  # fmt: skip
        if got < 0:
            score[:], stamp[:] = 0, 0  # whatever the failed call wrote
            raise MuveraError(
                "token cells: postings of another cell count" if got == -3
                else "token cells: postings out of range"
            )  # fmt: skip
        reached += got
    return reached


def probe(
    table: npt.NDArray[np.float32],
    n_tokens: int,
    postings: list[Postings],
    n_probe: int,
    n_docs: int,
    *,
    use_native: bool = True,
    scratch: tuple[npt.NDArray[Any], ...] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The documents whose tokens lie in the ``n_probe`` best cells of each of the query's
    first ``n_tokens`` tokens (columns of ``table``, see :meth:`Cells.table`), with PLAID's
    pruned centroid interaction as score: per query token, the value of the best probed
    cell holding one of the document's tokens (0 when none), summed. ``postings`` hold
    disjoint documents (labels ``< n_docs``), read one after the other. Returns (labels
    int64, scores float32), labels in order of first reach. ``scratch``: the kernel's
    (score float32, stamp int32, touched int64) arrays of ``n_docs`` (score and stamp
    zero), reused between calls: left zero again (a fresh set costs page faults at 10^6).

    >>> table = np.array([[0.9, 0.1], [0.5, 0.8], [0.1, 0.2]], np.float32)
    >>> post = Postings(np.array([0, 1, 3, 4]), np.array([0, 0, 1, 2], np.int32))
    >>> labels, scores = probe(table, 2, [post], 1, 3)
    >>> labels.tolist(), scores.tolist()
    ([0, 1], [1.7000000476837158, 0.800000011920929])
    """
    kernel = native.load() if use_native else None
    cells, vals = _probed_cells(table, n_tokens, n_probe, kernel)
    if kernel is not None:
        score, stamp, touched = scratch or _fresh_scratch(n_docs)
        reached = _reach(kernel, table, postings, cells, vals, score, stamp, touched)
        labels = touched[:reached].copy()
        found = score[labels]
        score[labels], stamp[labels] = 0, 0
        return labels, found
    score = np.zeros(n_docs, dtype=np.float32)
    pieces = []
    for p in postings:
        for i in range(n_tokens):
            ids = np.concatenate(
                [np.zeros(0, np.int64)]
                + [p.labels[p.bounds[c] : p.bounds[c + 1]] for c in cells[i]]
            ).astype(np.int64)
            if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n_docs):
                raise MuveraError("token cells: postings out of range")
            lens = np.diff(p.bounds)[cells[i]]
            first_ids, first = np.unique(ids, return_index=True)
            score[first_ids] += np.repeat(vals[i], lens)[first]
            pieces.append(ids)
    everything = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    labels, first = np.unique(everything, return_index=True)
    labels = labels[np.argsort(first, kind="stable")]
    return labels, score[labels]


def probe_best(
    table: npt.NDArray[np.float32],
    n_tokens: int,
    postings: list[Postings],
    n_probe: int,
    alive: npt.NDArray[np.bool_],
    want: int,
    *,
    use_native: bool = True,
    scratch: tuple[npt.NDArray[Any], ...] | None = None,
    threads: int | None = None,
) -> npt.NDArray[np.int64]:
    """The ``want`` documents of :func:`probe` (``n_docs = alive.size``) with the best
    scores among those ``alive`` (bool ``(n_docs,)``) marks, ties to the lower label,
    int64, ascending. The kernel keeps them without handing every reached document to
    numpy (``select.c``: ~190,000 of them per query at 10^6 documents), its threads
    (``threads``; None: every core from :data:`SPLIT_DOCS` documents on) splitting the
    documents into ranges; numpy ranks :func:`probe`'s output (the same labels).

    >>> table = np.array([[0.9, 0.1], [0.5, 0.8], [0.1, 0.2]], np.float32)
    >>> post = Postings(np.array([0, 1, 3, 4]), np.array([0, 0, 1, 2], np.int32))
    >>> probe_best(table, 2, [post], 2, np.ones(3, bool), 2).tolist()
    [0, 1]
    >>> probe_best(table, 2, [post], 2, np.array([False, True, True]), 1).tolist()
    [1]
    """
    alive = np.ascontiguousarray(alive, dtype=np.bool_)
    n_docs = alive.shape[0]
    want = min(max(0, int(want)), n_docs)  # never more than there are documents
    kernel = native.load() if use_native else None
    if kernel is None or not 1 <= len(postings) <= 2:
        labels, rough = probe(table, n_tokens, postings, n_probe, n_docs, use_native=False)
        live = alive[labels]
        labels, rough = labels[live], rough[live]
        return np.sort(labels[np.lexsort((labels, -rough))[:want]])
    if any(p.bounds.shape[0] != table.shape[0] + 1 for p in postings):
        raise MuveraError("token cells: postings of another cell count")
    cells, vals = _probed_cells(table, n_tokens, n_probe, kernel)
    score, stamp, slots = scratch or _fresh_scratch(n_docs)
    if score.shape[0] != n_docs:
        raise MuveraError("token cells: the probe's scratch does not match the documents")
    if threads is None:
        threads = native.default_threads() if n_docs >= SPLIT_DOCS else 1
    out = np.empty(want, dtype=np.int64)
    got = kernel.probe_best(
        [(p.bounds, p.labels) for p in postings], cells, vals, score, stamp, slots,
        alive.view(np.uint8), out, threads,
    )  # fmt: skip
    if got < 0:
        score[:], stamp[:] = 0, 0
        raise MuveraError(
            "token cells: out of memory" if got == -1 else "token cells: postings out of range"
        )
    kept = out[:got]
    kept.sort()
    return kept
