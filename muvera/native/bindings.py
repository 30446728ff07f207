"""ctypes bindings of the compiled kernels: one typed method per C entry point.

Standard library only. Callers pass C-contiguous numpy arrays of the documented dtypes
(checked by them); the GIL is released while C runs.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

__all__ = ["NativeLibrary"]


class NativeLibrary:
    """Typed wrapper of one compiled library's entry points (one CPU variant)."""

    def __init__(self, lib: ctypes.CDLL, path: Path, variant: str) -> None:
        self.path = path
        self.variant = variant  # "generic", "avx2" or "avx512"
        # The generic build's MaxSim is many times slower than numpy's BLAS path on x86-64
        # (benchmarks/bench_variants.py): there, and where it is the only build, numpy
        # scores; the SIMD variants' register-tiled MaxSim beats numpy.
        self.maxsim_preferred = variant != "generic"
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._encode = lib.muvera_fde_encode
        self._encode.restype = i64
        self._encode.argtypes = [
            *(ptr, i64, ptr, i64, ptr, i64, i64, i64, ptr, i64, i64, i64, ptr, i64)
        ]
        self._maxsim = lib.muvera_maxsim
        self._maxsim.restype = i64
        residual = (ptr, i64, ptr, i64, i64)  # bases, n_bases, labels, n_labels, first row
        self._maxsim.argtypes = [ptr, i64, i64, ptr, ptr, i64, ptr, ptr, i64, ptr, i64, *residual]
        self._pairs = lib.muvera_maxsim_pairs
        self._pairs.restype = i64
        self._pairs.argtypes = [
            *(ptr, i64, i64, ptr, ptr, ptr, i64, ptr, ptr, i64, ptr, i64),
            *residual,
        ]
        self._cells = lib.muvera_cell_scores
        self._cells.restype = i64
        self._cells.argtypes = [ptr, i64, i64, ptr, i64, ptr, ptr, i64, ptr, i64]
        self._table = lib.muvera_cell_table
        self._table.restype = i64
        self._table.argtypes = [ptr, i64, i64, ptr, i64, i64, ptr]
        self._postings = lib.muvera_cell_postings
        self._postings.restype = i64
        self._postings.argtypes = [ptr, i64, i64, ptr, ptr, ptr, i64, ptr, ptr]
        self._probe = lib.muvera_cell_probe
        self._probe.restype = i64
        self._probe.argtypes = [ptr, i64, ptr, i64, ptr, ptr, ptr, i64, ptr, ptr, i64, ptr]
        self._best = lib.muvera_probe_best
        self._best.restype = i64
        self._best.argtypes = [
            *(ptr, ptr, i64, ptr, ptr, i64, i64, i64, ptr, ptr, i64, i64),
            *(ptr, ptr, ptr, ptr, i64, i64, ptr, i64),
        ]
        self._top = lib.muvera_cell_top
        self._top.restype = i64
        self._top.argtypes = [ptr, i64, i64, i64, i64, ptr, ptr]
        self._codes = lib.muvera_token_codes
        self._codes.restype = i64
        self._codes.argtypes = [ptr, ptr, i64, i64, i64, ptr, i64, i64]
        self._graph = lib.muvera_graph_search
        self._graph.restype = i64
        self._graph.argtypes = [
            *(ptr, ptr, i64, ptr, i64, ptr, ptr, i64, ptr, i64, i64, i64, i64),
            *(ptr, i64, i64, i64, ptr, ptr, ptr, i64),
        ]

    def fde_encode(
        self,
        X: Any,
        sketch: Any,
        offsets: Any,
        num_repetitions: int,
        num_simhash_projections: int,
        projection: Any,
        block_dimension: int,
        average: bool,
        fill: bool,
        out: Any,
        n_threads: int = 1,
    ) -> None:
        """FDEs of the items ``offsets`` delimits (see ``muvera_fde_encode`` in fde.c).

        ``X`` float32 ``(N, d)``, ``sketch`` float32 ``(N, k*R)``, ``offsets`` int64
        ``(n+1,)``, ``projection`` float32 ``(R, d, p)`` or None (identity), ``out`` float32
        ``(n, R * 2**k * p)``; all C-contiguous (checked by the caller). Items are split
        between ``n_threads`` threads. The GIL is released while it runs.
        """
        n_items = offsets.shape[0] - 1
        status = self._encode(
            X.ctypes.data,
            X.shape[1],
            sketch.ctypes.data,
            sketch.shape[1],
            offsets.ctypes.data,
            n_items,
            num_repetitions,
            num_simhash_projections,
            None if projection is None else projection.ctypes.data,
            block_dimension,
            int(average),
            int(fill),
            out.ctypes.data,
            n_threads,
        )
        if status != 0:
            raise MemoryError("muvera native kernel: could not allocate its scratch memory")

    def maxsim(
        self,
        tokens: Any,
        offsets: Any,
        lengths: Any,
        queries: Any,
        query_offsets: Any,
        out: Any,
        n_threads: int,
    ) -> int:
        """Exact MaxSim of every query against every document span (``muvera_maxsim``).

        ``tokens`` float32 or float16 ``(rows, d)``, or a
        :class:`~muvera.token_codes.QuantizedTokens` (a memory map is read in place);
        document ``j`` is rows ``offsets[j] .. offsets[j] + lengths[j]`` (int64);
        ``queries`` float32 ``(query rows, d)`` with ``query_offsets`` int64 ``(n_q + 1,)``;
        ``out`` float32 ``(n_q, n_docs)``. All C-contiguous (checked by the caller). The
        GIL is released while it runs. Residual rows (``tokens.residual``) decode with
        their cell's base added; returns 0, or -2 when a residual row's label is out of
        range (the caller names the damaged file).
        """
        status = self._maxsim(
            *_token_rows(tokens),
            offsets.ctypes.data,
            lengths.ctypes.data,
            offsets.shape[0],
            queries.ctypes.data,
            query_offsets.ctypes.data,
            query_offsets.shape[0] - 1,
            out.ctypes.data,
            n_threads,
            *_residual(tokens),
        )
        return _check_maxsim(status)

    def maxsim_pairs(
        self,
        tokens: Any,
        offsets: Any,
        lengths: Any,
        pair_query: Any,
        queries: Any,
        query_offsets: Any,
        out: Any,
        n_threads: int,
    ) -> int:
        """Exact MaxSim of (query, document span) pairs (``muvera_maxsim_pairs``).

        Pair ``p`` is query ``pair_query[p]`` (int64, in ``0 .. n_q``) against rows
        ``offsets[p] .. offsets[p] + lengths[p]`` of ``tokens``; ``out`` float32
        ``(n_pairs,)``. Otherwise as :meth:`maxsim`; the pairs are shared between
        ``n_threads`` threads.
        """
        status = self._pairs(
            *_token_rows(tokens),
            offsets.ctypes.data,
            lengths.ctypes.data,
            pair_query.ctypes.data,
            offsets.shape[0],
            queries.ctypes.data,
            query_offsets.ctypes.data,
            query_offsets.shape[0] - 1,
            out.ctypes.data,
            n_threads,
            *_residual(tokens),
        )
        return _check_maxsim(status)

    def cell_scores(
        self, table: Any, codes: Any, offsets: Any, lengths: Any, out: Any, n_threads: int
    ) -> int:
        """Approximate MaxSim of one query by token cells (``muvera_cell_scores`` in cells.c).

        ``table`` float32 ``(n_cells, query tokens)``, ``codes`` uint16 ``(rows,)``,
        ``offsets``/``lengths`` int64 ``(n_docs,)``, ``out`` float32 ``(n_docs,)``; all
        C-contiguous (checked by the caller). Returns 0, or -2 when a code or a span does not
        fit (the caller names the damaged file). The GIL is released while it runs.
        """
        status = int(
            self._cells(
                table.ctypes.data,
                table.shape[0],
                table.shape[1],
                codes.ctypes.data,
                codes.shape[0],
                offsets.ctypes.data,
                lengths.ctypes.data,
                offsets.shape[0],
                out.ctypes.data,
                n_threads,
            )
        )
        if status == -1:
            raise MemoryError("muvera native kernel: could not allocate its scratch memory")
        return status

    def cell_table(self, centroids: Any, query: Any, out: Any) -> int:
        """One query's table of ``<centroid c, query token i>`` at ``out[c, i]``, zero past
        its tokens (``muvera_cell_table`` in cells.c, one thread). ``centroids`` float32
        ``(n_cells, d)``, ``query`` float32 ``(n_q, d)``, ``out`` float32 ``(n_cells,
        width)``, width a multiple of 32 and >= n_q; all C-contiguous (checked by the
        caller). Returns 0 or -3 (a bad width). The GIL is released while it runs."""
        status = int(
            self._table(
                centroids.ctypes.data, centroids.shape[0], centroids.shape[1],
                query.ctypes.data, query.shape[0], out.shape[1], out.ctypes.data,
            )
        )  # fmt: skip
        if status == -1:
            raise MemoryError("muvera native kernel: could not allocate its scratch memory")
        return status

    def cell_postings(
        self,
        codes: Any,
        n_cells: int,
        labels: Any,
        offsets: Any,
        lengths: Any,
        bounds: Any,
        postings: Any,
    ) -> int:
        """Postings of the token cells (``muvera_cell_postings`` in cells.c): counts into
        ``bounds`` int64 ``(n_cells + 1,)`` when ``postings`` is None, else fills ``postings``
        int32 ``(bounds[-1],)``. ``codes`` uint16, ``labels``/``offsets``/``lengths`` int64
        ``(n_docs,)``, C-contiguous (checked by the caller). Returns the number of postings,
        or -2 for a bad code, span or label."""
        status = int(
            self._postings(
                codes.ctypes.data, codes.shape[0], n_cells, labels.ctypes.data,
                offsets.ctypes.data, lengths.ctypes.data, labels.shape[0],
                bounds.ctypes.data, None if postings is None else postings.ctypes.data,
            )
        )  # fmt: skip
        if status == -1:
            raise MemoryError("muvera native kernel: could not allocate its scratch memory")
        return status

    def cell_probe(
        self,
        bounds: Any,
        postings: Any,
        cells: Any,
        values: Any,
        starts: Any,
        score: Any,
        stamp: Any,
        touched: Any,
    ) -> int:
        """Documents reached by a query's probed cells (``muvera_cell_probe`` in cells.c):
        ``cells`` int64 / ``values`` float32 ``(starts[-1],)``, ``starts`` int64
        ``(n_tokens + 1,)``; ``score`` float32 / ``stamp`` int32 zeroed and ``touched`` int64,
        all ``(n_docs,)``. Returns how many documents were reached, or -2."""
        return int(
            self._probe(
                bounds.ctypes.data, bounds.shape[0] - 1, postings.ctypes.data,
                postings.shape[0], cells.ctypes.data, values.ctypes.data, starts.ctypes.data,
                starts.shape[0] - 1, score.ctypes.data, stamp.ctypes.data, score.shape[0],
                touched.ctypes.data,
            )
        )  # fmt: skip

    def probe_best(
        self,
        lists: list[tuple[Any, Any]],
        cells: Any,
        values: Any,
        score: Any,
        stamp: Any,
        slots: Any,
        alive: Any,
        out: Any,
        n_threads: int,
    ) -> int:
        """The best ``out.shape[0]`` live documents reached by a query's probed ``cells``
        int64 / ``values`` float32 ``(n_tokens, n_probe)`` in ``lists`` (1 or 2 (bounds
        int64, postings int32) pairs of disjoint documents), ties to the lower label
        (``muvera_probe_best`` in select.c), written to ``out`` int64 in no particular
        order; ``score`` float32 / ``stamp`` int32 zero and ``slots`` int64 scratch,
        ``alive`` uint8, all ``(n_docs,)``. Returns how many were kept, -1, -2 or -3."""
        (b0, p0), (b1, p1) = lists[0], lists[-1]
        n_tokens, n_probe = cells.shape
        return int(
            self._best(
                b0.ctypes.data, p0.ctypes.data, p0.shape[0], b1.ctypes.data, p1.ctypes.data,
                p1.shape[0], len(lists), b0.shape[0] - 1, cells.ctypes.data,
                values.ctypes.data, n_tokens, n_probe, score.ctypes.data, stamp.ctypes.data,
                slots.ctypes.data, alive.ctypes.data, score.shape[0], out.shape[0],
                out.ctypes.data, n_threads,
            )
        )  # fmt: skip

    def cell_top(self, table: Any, n_lanes: int, cells: Any, values: Any) -> int:
        """The ``k`` best cells of each of the first ``n_lanes`` columns of ``table``
        float32 ``(n_cells, width)`` (``muvera_cell_top`` in cells.c): ``cells`` int64 /
        ``values`` float32 ``(n_lanes, k)``, best first. Returns 0, or -3 for bad sizes."""
        status = int(
            self._top(
                table.ctypes.data, table.shape[0], table.shape[1], n_lanes, cells.shape[1],
                cells.ctypes.data, values.ctypes.data,
            )
        )  # fmt: skip
        if status == -1:
            raise MemoryError("muvera native kernel: could not allocate its scratch memory")
        return status

    def graph_search(
        self,
        codes: Any,
        meta: Any,
        links0: Any,
        upper: Any,
        upper_start: Any,
        deleted: Any,
        has_deleted: bool,
        entry: int,
        max_level: int,
        queries: Any,
        ef: int,
        out_rows: Any,
        out_scores: Any,
        out_counts: Any,
        n_threads: int,
    ) -> None:
        """HNSW search over int8 codes (see ``muvera_graph_search`` in graph.c).

        ``codes`` int8 ``(n, d)``, ``meta`` float32 ``(n, 2)`` (scale, code sum),
        ``links0`` uint32 ``(n, max_m0 + 1)``, ``upper`` uint32 ``(lists, max_m + 1)``,
        ``upper_start`` int64 ``(n,)``, ``deleted`` uint8 ``(n,)`` (``has_deleted``: any
        set), ``queries`` float32
        ``(n_q, d)``; ``out_rows`` int64 and ``out_scores`` float32 ``(n_q, k)``,
        ``out_counts`` int64 ``(n_q,)``. All C-contiguous (checked by the caller). Queries
        are split between ``n_threads`` threads; the GIL is released while it runs.
        """
        n, d = codes.shape
        status = self._graph(
            codes.ctypes.data,
            meta.ctypes.data,
            d,
            links0.ctypes.data,
            links0.shape[1],
            upper.ctypes.data,
            upper_start.ctypes.data,
            upper.shape[1],
            deleted.ctypes.data,
            int(has_deleted),
            n,
            entry,
            max_level,
            queries.ctypes.data,
            queries.shape[0],
            ef,
            out_rows.shape[1],
            out_rows.ctypes.data,
            out_scores.ctypes.data,
            out_counts.ctypes.data,
            n_threads,
        )
        if status != 0:
            raise MemoryError("muvera native kernel: could not allocate its scratch memory")

    def token_codes(self, x: Any, scales: Any, kind: int, out: Any, n_threads: int = 1) -> None:
        """Stored token rows of ``x`` (see ``muvera_token_codes`` in codes.c).

        ``x`` float32 ``(n, d)`` (finite), ``scales`` float32 ``(n,)``, ``kind`` 2 (int8), 3
        (int4) or 4 (2 bits), ``out`` uint8 ``(n, row_bytes)``; all C-contiguous (checked by
        the caller). Rows are split between ``n_threads`` threads; the GIL is released.
        """
        n, d = x.shape
        status = self._codes(
            x.ctypes.data, scales.ctypes.data, n, d, kind, out.ctypes.data, out.shape[1],
            n_threads,
        )  # fmt: skip
        if status != 0:
            raise ValueError(f"muvera_token_codes: kind {kind}, d {d}, rows of {out.shape[1]}")


def _check_maxsim(status: int) -> int:
    """0, or -2 (a residual row's label out of range: the caller names the file)."""
    if status not in (0, -2):
        raise MemoryError("muvera native kernel: could not allocate its scratch memory")
    return status


def _residual(tokens: Any) -> tuple[int | None, int, int | None, int, int]:
    """(bases, n_bases, labels, n_labels, first row) of residual token rows for the MaxSim
    kernels (:class:`~muvera.token_codes.QuantizedTokens`' ``residual``), NULLs without."""
    residual = getattr(tokens, "residual", None)
    if residual is None:
        return None, 0, None, 0, 0
    bases, labels, first = residual
    return bases.ctypes.data, bases.shape[0], labels.ctypes.data, labels.shape[0], int(first)


def _token_rows(tokens: Any) -> tuple[int, int, int]:
    """(address, kind, d) of a token matrix for the MaxSim kernels: kind 0 float32, 1 float16,
    2/3 the quantized rows of a :class:`~muvera.token_codes.QuantizedTokens` (its ``code``)."""
    code = getattr(tokens, "code", None)
    if code is not None:
        return tokens.rows.ctypes.data, int(code), int(tokens.dimension)
    return tokens.ctypes.data, int(tokens.dtype.itemsize == 2), int(tokens.shape[1])
