"""The token cells of a local store (:mod:`muvera.cells`) on disk, and the candidates they add.

Files, named in the manifest's token section (``"cells"``)::

    centroids.bin   float32: coarse (coarse, d) then fine (coarse * fine, d) centroids,
                    written once, when the cells are fitted
    cells.bin       uint16: the cell of every token row, in the token file's order
                    (append-only like it; compaction writes ``cells-<generation>.bin``)

An index created with cells has ``"cells": {}`` (8,192 cells) or ``{"count": n}`` (``n``
cells, asked for by the store option ``token_cells=n``) until it holds
:func:`~muvera.cells.min_fit_tokens` tokens; the add that reaches them fits the centroids
on a sample of every token so far and assigns them all (before that the index is small
enough for the FDE candidates to cover it). Everything read back is checked: the
centroids' size and finiteness, one code per token row; codes themselves are checked by
the kernel that reads them.

At search time (:meth:`TokenCells.candidates`) the FDE's top ``1 / SCAN_PART`` of the
candidates (a quarter) is kept and the rest is filled with the documents that the
approximate MaxSim by cells ranks highest among every live document, when the token file
holds at most :data:`SCAN_TOKENS` tokens; beyond, the FDE's top ``1 / FDE_PART`` is kept
and the rest ranked by cells among the FDE's top ``WIDE x candidates`` and the documents
the query's probed cells reach (:data:`N_PROBE`, :data:`PROBE_DOCS`). FDE and cells miss
different documents, so the union finds more of the exact top-10 than either alone at the same
re-rank cost (``benchmarks/bench_cells.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import native
from ..cells import (
    CELL_COUNTS,
    COARSE,
    FINE,
    Cells,
    cell_scores,
    fit_sample,
    min_fit_tokens,
    sample_rows,
    split,
)
from ..errors import MuveraError
from ..files import AppendOnlyFile, atomic_write_bytes
from ..postings import Postings, probe_best

__all__ = [
    "DEFAULT_COUNT", "FDE_PART", "N_PROBE", "PROBE_DOCS", "SCAN_PART", "SCAN_TOKENS", "WIDE",
    "TokenCells",
    "min_fit_tokens",
]  # fmt: skip

DEFAULT_COUNT = COARSE * FINE  # cells fitted unless the store option token_cells says
SCAN_TOKENS = 1 << 22  # token rows up to which every live document is scored by cells
# beyond (chosen by benchmarks/check_scale_text_cells.py --sweep, see its protocol): the
# candidates are the FDE's top 1 / FDE_PART of them, then the documents that cells rank
# highest among the FDE's top WIDE x candidates and the best PROBE_DOCS x candidates, by
# the probed cells alone, of the documents in each query token's N_PROBE best cells
FDE_PART = 4
SCAN_PART = 4  # at most SCAN_TOKENS rows: the FDE's top quarter kept (check_scan_part.py)
WIDE = 4
N_PROBE = 4
PROBE_DOCS = 32
TAIL_SHARE = 4  # postings of documents added since the last full build: rebuilt alone
# while they are fewer than 1 / TAIL_SHARE of the documents the full build covers
TABLE_THREADS = 4  # worker threads computing searches' cell tables (shared, made on use)
_TABLE_WORKERS: ThreadPoolExecutor | None = None
_SHARED_LOCK = threading.Lock()  # guards _TABLE_WORKERS and every TokenCells._spare
CODES = "cells.bin"
CENTROIDS = "centroids.bin"


def _count(section: dict[str, Any], key: str, low: int, high: int) -> int:
    value = section.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MuveraError(f"the token cells' {key!r} must be an integer in {low} .. {high}")
    return value


def _sorted_union(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The distinct labels of ``a`` and ``b``, ascending: ``np.union1d`` by one sort (its
    hashing pass cost ~1 ms for 7,000 labels at 10^6 documents).

    >>> _sorted_union(np.array([5, 1, 3]), np.array([3, 7])).tolist()
    [1, 3, 5, 7]
    """
    both = np.concatenate([a, b]).astype(np.int64, copy=False)
    both.sort()
    if both.size < 2:
        return both
    first = np.empty(both.size, dtype=np.bool_)
    first[0] = True
    np.not_equal(both[1:], both[:-1], out=first[1:])
    return both[first]


class TokenCells:
    """Centroids + one code per token row of a local store; ``cells`` None until fitted."""

    def __init__(
        self, directory: Path, section: dict[str, Any], token_rows: int, dimension: int
    ) -> None:
        self.directory = directory
        self.dimension = dimension
        self.cells: Cells | None = None
        self.codes = AppendOnlyFile(directory / CODES, 0)
        self.centroids_file = CENTROIDS
        # postings (built on demand, in memory): labels [0, a) and [a, b)
        self._postings: tuple[int, Postings, int, Postings | None] | None = None
        self._spare: list[tuple[npt.NDArray[Any], ...]] = []  # probe scratch, left zero
        self.count = DEFAULT_COUNT  # cells of the fit to come
        if not isinstance(section, dict):
            raise MuveraError("the token section's cells must be a dict")
        if set(section) == {"count"}:  # not fitted yet, with a count asked for
            count = section["count"]
            if not isinstance(count, int) or isinstance(count, bool) or count not in CELL_COUNTS:
                raise MuveraError(
                    f"the token cells' count must be one of {list(CELL_COUNTS)}, got {count!r}"
                )
            self.count = int(count)
            return
        if not section:
            return
        coarse = _count(section, "coarse", 1, 65_536)
        fine = _count(section, "fine", 1, 65_536 // coarse)
        committed = _count(section, "bytes", 0, 1 << 62)
        if committed != 2 * token_rows:
            raise MuveraError(
                f"{section.get('file')}: {committed} bytes of cell codes for {token_rows} "
                "token rows (2 bytes each)"
            )
        self.centroids_file = str(section.get("centroids"))
        path = directory / self.centroids_file
        values = (coarse + coarse * fine) * dimension
        try:
            size = path.stat().st_size
            if size != 4 * values:
                raise MuveraError(f"{path}: {size} bytes, expected {4 * values}")
            data = np.fromfile(path, dtype="<f4", count=values).astype(np.float32)
        except OSError as exc:
            raise MuveraError(f"cannot read the token cells' centroids: {exc}") from None
        if not np.isfinite(data).all():
            raise MuveraError(f"{path}: the centroids are not all finite")
        data = data.reshape(-1, dimension)
        self.cells = Cells(data[:coarse].copy(), data[coarse:].copy())
        try:
            self.codes = AppendOnlyFile(directory / str(section["file"]), committed, map_now=True)
        except OSError as exc:
            raise MuveraError(f"cannot read the token cells' codes: {exc}") from None

    @property
    def fitted(self) -> bool:
        return self.cells is not None

    def add(
        self,
        tokens: npt.NDArray[Any],
        first_row: int,
        earlier: Callable[[int, int], npt.NDArray[np.float32]],
    ) -> None:
        """Codes of the token rows ``first_row ..`` (``tokens`` float32 ``(n, d)``), appended;
        fits :attr:`count` cells first when the store reaches
        :func:`~muvera.cells.min_fit_tokens` rows, then assigns the earlier rows too
        (``earlier(start, stop)`` returns them as float32)."""
        if self.cells is None:
            if first_row + tokens.shape[0] < min_fit_tokens(self.count):
                return
            before = earlier(0, first_row)  # fewer than min_fit_tokens rows
            # at most fit_sample rows of a large add: no copy of all of it
            sample = sample_rows(tokens, fit_sample(self.count), np.random.default_rng(0))
            coarse, fine = split(self.count)
            self.cells = Cells.fit(
                np.concatenate([before, sample]) if first_row else sample, coarse, fine
            )
            centroids = np.concatenate([self.cells.coarse, self.cells.fine]).astype("<f4")
            atomic_write_bytes(self.directory / self.centroids_file, centroids.tobytes())
            self.codes = AppendOnlyFile(self.directory / CODES, 0)
            self._append(self.cells.assign(before))
        self._append(self.cells.assign(tokens))

    def _append(self, codes: npt.NDArray[np.uint16]) -> None:
        data = codes.astype("<u2").tobytes()
        if data:
            start = self.codes.append(data)
            self.codes.committed = start + len(data)

    def code_rows(self) -> npt.NDArray[np.uint16]:
        return self.codes.view("<u2")

    def section(self) -> dict[str, Any]:
        """The manifest's record of the cells (before they are fitted: ``{}``, or the count
        asked for when it is not the default)."""
        if self.cells is None:
            return {} if self.count == DEFAULT_COUNT else {"count": self.count}
        return {
            "file": self.codes.path.name,
            "bytes": self.codes.committed,
            "centroids": self.centroids_file,
            "coarse": int(self.cells.coarse.shape[0]),
            "fine": self.cells.n_fine,
        }

    def compact(self, spans: list[tuple[int, int]], generation: int) -> None:
        """Keep the codes of ``spans`` (offset, length) in order, in ``cells-<gen>.bin``."""
        if self.cells is None:
            return
        codes = self.code_rows()
        parts = [codes[o : o + n] for o, n in spans]
        data = np.concatenate(parts).astype("<u2").tobytes() if parts else b""
        target = AppendOnlyFile(self.directory / f"cells-{generation:06d}.bin", 0)
        target.append(data)
        target.committed = len(data)
        self.codes = target

    def postings(
        self,
        offsets: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
        alive: npt.NDArray[np.bool_],
    ) -> list[Postings]:
        """The postings of every live label ``< len(offsets)`` (document spans and live mask
        of the store), built on first use and extended as documents are added: a full
        build, plus one of the labels added since while they are few (:data:`TAIL_SHARE`).
        Labels deleted after a build stay in it (the caller masks them); compaction keeps
        labels, so it changes nothing here."""
        if self.cells is None:
            raise MuveraError("the token cells are not fitted")
        n = int(offsets.shape[0])
        state = self._postings
        if state is not None and state[2] == n:
            return [state[1]] if state[3] is None else [state[1], state[3]]
        if state is None or n < state[2] or (n - state[0]) * TAIL_SHARE > state[0]:
            state = (n, self._build(0, n, offsets, lengths, alive), n, None)
        else:
            state = (state[0], state[1], n, self._build(state[0], n, offsets, lengths, alive))
        self._postings = state
        return [state[1]] if state[3] is None else [state[1], state[3]]

    def _build(
        self,
        start: int,
        stop: int,
        offsets: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
        alive: npt.NDArray[np.bool_],
    ) -> Postings:
        if self.cells is None:
            raise MuveraError("the token cells are not fitted")
        labels = start + np.flatnonzero(alive[start:stop])
        return Postings.build(
            self.code_rows(), self.cells.n_cells, labels, offsets[labels], lengths[labels]
        )

    def _scratch(self, n_docs: int) -> tuple[npt.NDArray[Any], ...]:
        """Zeroed probe arrays of ``n_docs`` (:func:`muvera.postings.probe`), a spare one
        when there is one of that size (searches on several threads take one each)."""
        with _SHARED_LOCK:
            while self._spare:
                spare = self._spare.pop()
                if spare[0].size == n_docs:
                    return spare
        return np.zeros(n_docs, np.float32), np.zeros(n_docs, np.int32), np.empty(n_docs, np.int64)

    def start_tables(
        self, queries: list[npt.NDArray[np.float32]]
    ) -> Future[list[npt.NDArray[np.float32]]] | None:
        """The queries' cell tables (:meth:`muvera.cells.Cells.table`) computed on a worker
        thread (the kernel releases the GIL), so that a search walks the FDE graph
        meanwhile; None when the cells are not fitted."""
        global _TABLE_WORKERS
        if self.cells is None:
            return None
        with _SHARED_LOCK:
            if _TABLE_WORKERS is None:
                _TABLE_WORKERS = ThreadPoolExecutor(TABLE_THREADS, "muvera-cell-tables")
        cells = self.cells
        return _TABLE_WORKERS.submit(lambda: [cells.table(q) for q in queries])

    def candidates(
        self,
        queries: list[npt.NDArray[np.float32]],
        fde_labels: npt.NDArray[np.int64],
        keep: int,
        pools: list[npt.NDArray[np.int64]],
        offsets: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
        total: int,
        probed: tuple[list[Postings], npt.NDArray[np.bool_]] | None = None,
        tables: Future[list[npt.NDArray[np.float32]]] | None = None,
    ) -> npt.NDArray[np.int64]:
        """Per query: its first ``keep`` FDE candidates (``fde_labels`` row, -1 = none), then
        the documents of its ``pools`` entry (labels; one array shared by all queries
        when ``pools`` has one) that cells rank highest, until ``total`` distinct
        labels. With ``probed`` (postings, live mask), each pool also gets the best
        ``PROBE_DOCS x total`` live documents reached by the query's probed cells
        (:func:`muvera.postings.probe_best`). ``tables``: the queries' cell tables from
        :meth:`start_tables`, else computed here. Returns int64 ``(n_q, total)`` padded
        with -1."""
        if self.cells is None:
            raise MuveraError("the token cells are not fitted")
        ready = None if tables is None else tables.result()
        out = np.full((len(queries), total), -1, dtype=np.int64)
        codes = self.code_rows()
        cells = self.cells
        # a batch: queries side by side, each scanned on one thread (the kernels release
        # the GIL; the table stays in the cache of the core that wrote it); one query: its
        # scan split between threads when long (benchmarks/bench_tail.py)
        workers = min(len(queries), native.default_threads())
        threads = 1 if workers > 1 else None

        def one(i: int) -> None:
            pool = pools[0] if len(pools) == 1 else pools[i]
            first = fde_labels[i, :keep]
            first = first[first >= 0]
            table = cells.table(queries[i]) if ready is None else ready[i]
            if probed is not None:
                scratch = self._scratch(offsets.size)
                try:
                    best = probe_best(
                        table, queries[i].shape[0], probed[0], N_PROBE, probed[1],
                        PROBE_DOCS * total, scratch=scratch, threads=threads,
                    )  # fmt: skip
                finally:
                    with _SHARED_LOCK:  # left zero by probe_best, even when it raised
                        self._spare.append(scratch)
                pool = _sorted_union(pool, best)
            scores = cell_scores(table, codes, offsets[pool], lengths[pool], threads=threads)
            want = min(total, pool.size)
            top = np.argpartition(-scores, want - 1)[:want] if want else pool[:0]
            ranked = pool[top[np.argsort(-scores[top], kind="stable")]]
            merged = np.concatenate([first, ranked[~np.isin(ranked, first)]])[:total]
            out[i, : merged.size] = merged

        if workers <= 1:
            for i in range(len(queries)):
                one(i)
        else:
            with ThreadPoolExecutor(workers) as executor:
                list(executor.map(one, range(len(queries))))
        return out
