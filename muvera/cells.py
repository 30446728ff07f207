"""Token cells: every stored token gets the id of its nearest centroid, so that a query can
score many documents approximately at the cost of a table lookup per document token.

The centroids are a two-level tree fitted by k-means on a sample of tokens: ``coarse``
centroids, and ``fine`` centroids inside each coarse cell (``coarse * fine`` cells, 8,192 by
default). A token is assigned to its nearest coarse centroid, then to the nearest fine
centroid inside that cell: 128 + 64 products per token instead of 8,192 for a flat
codebook of the same size. The tree was preferred to flat codebooks of 1,024 / 4,096 cells
and to residual two-level codebooks in exploratory runs on SciFact train queries that are
not kept in the repository (a flat 4,096 found about the same share of the exact top-10
at many times the fitting cost); ``benchmarks/bench_cells.py`` measures the default as
shipped. Codes are uint16.

The approximate MaxSim of a query ``q`` against a document ``D`` replaces each document
token by its cell's centroid (PLAID's "centroid interaction"):
``sum_i max_{t in D} <q_i, centroid(t)>`` = ``sum_i max_t table[code(t), i]`` with
``table = centroids @ q.T`` computed once per query. The index uses it to choose, among
many documents, which ones exact MaxSim re-ranks (:mod:`muvera.stores.cell_file`); the
documents of a query's best cells come from :mod:`muvera.postings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from . import native
from .errors import MuveraError

__all__ = [
    "CELL_COUNTS", "COARSE", "FINE", "FIT_SAMPLE", "MIN_FIT_TOKENS", "Cells", "cell_scores",
    "fit_sample", "kmeans", "min_fit_tokens", "sample_rows", "split",
]  # fmt: skip

COARSE = 128  # coarse centroids
FINE = 64  # fine centroids inside each coarse cell
FIT_SAMPLE = 65_536  # tokens a fit reads at most (sampled without replacement)
MIN_FIT_TOKENS = 32_768  # fewer tokens than this: no cells yet (the index fits them later)
CELL_COUNTS = tuple(1 << b for b in range(10, 17))  # counts a store may ask for: 1,024 .. 65,536
ITERATIONS = 10  # Lloyd iterations per k-means
SPLIT_TOKENS = 1 << 16  # a scan split between threads from this many tokens on
_ASSIGN_BLOCK = 65_536  # tokens per block of an assignment


def kmeans(
    points: npt.NDArray[np.float32], k: int, rng: np.random.Generator, iterations: int = ITERATIONS
) -> npt.NDArray[np.float32]:
    """``k`` centroids of ``points`` ``(n, d)`` float32 by Lloyd's algorithm, started from
    ``k`` distinct random points (``n < k``: points repeated). A cluster that empties keeps
    its previous centroid. Returns float32 ``(k, d)``.

    >>> x = np.array([[0, 0], [0, 1], [10, 10], [10, 11]], np.float32)
    >>> c = kmeans(x, 2, np.random.default_rng(0))
    >>> sorted(c[:, 0].tolist())
    [0.0, 10.0]
    """
    n = points.shape[0]
    if n == 0:
        raise MuveraError("k-means needs at least one point")
    start = rng.choice(n, k, replace=False) if n >= k else np.arange(k) % n
    centres = np.array(points[start], dtype=np.float32)
    if n <= k:
        return centres
    for _ in range(iterations):
        nearest = _nearest(points, centres)
        counts = np.bincount(nearest, minlength=k)
        order = np.argsort(nearest, kind="stable")
        filled = np.flatnonzero(counts)
        starts = np.concatenate([[0], np.cumsum(counts[filled])[:-1]])
        sums = np.add.reduceat(points[order].astype(np.float64), starts, axis=0)
        centres[filled] = (sums / counts[filled, None]).astype(np.float32)
    return centres


def sample_rows(tokens: npt.NDArray[Any], limit: int, rng: np.random.Generator) -> Any:
    """``tokens`` itself when it has at most ``limit`` rows, else ``limit`` of its rows
    drawn without replacement, in their order.

    >>> sample_rows(np.arange(10).reshape(5, 2), 2, np.random.default_rng(0)).shape
    (2, 2)
    """
    n = tokens.shape[0]
    return tokens if n <= limit else tokens[np.sort(rng.choice(n, limit, replace=False))]


def split(n_cells: int) -> tuple[int, int]:
    """(coarse, fine) of a tree of ``n_cells`` cells (a power of two): the coarse count is
    the larger half of the bits, so 8,192 = 128 x 64 (the default) and 65,536 = 256 x 256.

    >>> split(8192), split(65536), split(1024)
    ((128, 64), (256, 256), (32, 32))
    """
    if n_cells not in CELL_COUNTS:
        raise MuveraError(
            f"token cells: the count must be one of {list(CELL_COUNTS)}, got {n_cells!r}"
        )
    bits = n_cells.bit_length() - 1
    coarse = 1 << (bits - bits // 2)
    return coarse, n_cells // coarse


def fit_sample(n_cells: int) -> int:
    """Tokens a fit of ``n_cells`` cells reads at most: :data:`FIT_SAMPLE`, or 8 a cell
    when that is more (8 x 65,536 = 524,288 for the largest tree).

    >>> fit_sample(8192), fit_sample(65536)
    (65536, 524288)
    """
    return max(FIT_SAMPLE, 8 * n_cells)


def min_fit_tokens(n_cells: int) -> int:
    """Token rows a store holds before it fits ``n_cells`` cells: :data:`MIN_FIT_TOKENS`,
    or 4 a cell when that is more.

    >>> min_fit_tokens(8192), min_fit_tokens(65536)
    (32768, 262144)
    """
    return max(MIN_FIT_TOKENS, 4 * n_cells)


def _nearest(points: npt.NDArray[np.float32], centres: npt.NDArray[np.float32]) -> Any:
    """Index of each point's nearest centroid (squared Euclidean; ties: the first)."""
    half_norms = 0.5 * np.einsum("ij,ij->i", centres, centres)
    out = np.empty(points.shape[0], dtype=np.int64)
    for s in range(0, points.shape[0], _ASSIGN_BLOCK):
        block = points[s : s + _ASSIGN_BLOCK]
        out[s : s + block.shape[0]] = np.argmax(block @ centres.T - half_norms, axis=1)
    return out


@dataclass(frozen=True)
class Cells:
    """Fitted token cells: ``coarse`` float32 ``(n_coarse, d)``, ``fine`` float32
    ``(n_coarse * n_fine, d)`` (the fine centroids of coarse cell ``c`` are rows
    ``c * n_fine .. (c + 1) * n_fine``; a token's code is its fine row)."""

    coarse: npt.NDArray[np.float32]
    fine: npt.NDArray[np.float32]

    @property
    def n_cells(self) -> int:
        return int(self.fine.shape[0])

    @property
    def n_fine(self) -> int:
        return self.n_cells // int(self.coarse.shape[0])

    @property
    def dimension(self) -> int:
        return int(self.coarse.shape[1])

    @classmethod
    def fit(
        cls, tokens: npt.NDArray[Any], coarse: int = COARSE, fine: int = FINE, seed: int = 0
    ) -> Cells:
        """Fit on (a sample of at most :func:`fit_sample` rows of) ``tokens`` ``(n, d)``:
        k-means of ``coarse`` centroids, then of ``fine`` centroids on each coarse cell's
        members (a cell with fewer members than ``fine`` repeats them). Deterministic for a
        given ``seed``. Rows must be finite.

        >>> rng = np.random.default_rng(0)
        >>> cells = Cells.fit(rng.standard_normal((600, 8)).astype(np.float32), 4, 8)
        >>> cells.coarse.shape, cells.fine.shape
        ((4, 8), (32, 8))
        """
        if coarse < 1 or fine < 1 or coarse * fine > 65_536:
            raise MuveraError("token cells: coarse * fine must be 1 .. 65,536")
        rng = np.random.default_rng(seed)
        sample = np.asarray(sample_rows(tokens, fit_sample(coarse * fine), rng), np.float32)
        if sample.shape[0] == 0 or not np.isfinite(sample).all():
            raise MuveraError("token cells: the fit needs finite tokens")
        top = kmeans(sample, coarse, rng)
        member = _nearest(sample, top)
        fine_rows = np.empty((coarse * fine, sample.shape[1]), dtype=np.float32)
        for c in range(coarse):  # one k-means per coarse cell, not per token
            points = sample[member == c]
            fine_rows[c * fine : (c + 1) * fine] = (
                kmeans(points, fine, rng) if points.shape[0] else top[c]
            )
        return cls(top, fine_rows)

    def assign(self, tokens: npt.NDArray[Any]) -> npt.NDArray[np.uint16]:
        """The cell of every row of ``tokens`` ``(n, d)``: uint16 ``(n,)``.

        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal((600, 8)).astype(np.float32)
        >>> cells = Cells.fit(x, 4, 8)
        >>> codes = cells.assign(x)
        >>> codes.dtype, int(codes.max()) < cells.n_cells
        (dtype('uint16'), True)
        """
        x = np.asarray(tokens, dtype=np.float32)
        top = _nearest(x, self.coarse)
        codes = np.empty(x.shape[0], dtype=np.uint16)
        fine = self.n_fine
        order = np.argsort(top, kind="stable")
        bounds = np.searchsorted(top[order], np.arange(self.coarse.shape[0] + 1))
        for c in np.flatnonzero(np.diff(bounds)):  # coarse cells that hold tokens
            rows = order[bounds[c] : bounds[c + 1]]
            local = _nearest(x[rows], self.fine[c * fine : (c + 1) * fine])
            codes[rows] = c * fine + local
        return codes

    def table(self, query: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``<query token i, centroid c>`` at ``[c, i]``: float32 ``(n_cells, width)``, width
        the query's token count rounded up to a multiple of 32 with zero columns (a zero
        column adds ``max(0) = 0`` to every score), C-contiguous: one row per cell, the
        layout the kernel gathers.

        >>> cells = Cells(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32))
        >>> cells.table(np.array([[3.0, 4.0]], np.float32))[:, :2]
        array([[3., 0.],
               [4., 0.]], dtype=float32)
        """
        q = np.ascontiguousarray(query, np.float32)
        width = max(32, -(-q.shape[0] // 32) * 32)
        kernel = native.load()
        # the SIMD builds (the generic one is slower than BLAS, as for MaxSim)
        fine = self.fine
        if (
            kernel is not None
            and kernel.maxsim_preferred
            and q.ndim == 2
            and q.shape[1] == fine.shape[1]
            and fine.dtype == np.float32
            and fine.flags.c_contiguous  # the kernel reads rows in place
        ):
            out = np.empty((self.n_cells, width), dtype=np.float32)
            if kernel.cell_table(fine, q, out) == 0:  # one thread, no BLAS
                return out
        out = np.zeros((self.n_cells, width), dtype=np.float32)
        np.matmul(fine, q.T, out=out[:, : q.shape[0]])
        return out


def cell_scores(
    table: npt.NDArray[np.float32],
    codes: npt.NDArray[np.uint16],
    offsets: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    *,
    use_native: bool = True,
    threads: int | None = None,
) -> npt.NDArray[np.float32]:
    """Approximate MaxSim of one query (its ``table``, see :meth:`Cells.table`) against
    documents stored as spans of ``codes``: document ``j`` is codes ``offsets[j] ..
    offsets[j] + lengths[j]``. Returns float32 ``(n_docs,)``; ``-inf`` for an empty span.
    Codes at or beyond the table's rows, or spans outside ``codes``, raise
    :class:`~muvera.MuveraError` (codes come from files). Compiled kernel when built, else
    numpy; ``threads`` None: every CPU from :data:`SPLIT_TOKENS` tokens on, else one.

    >>> table = np.array([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]], np.float32)
    >>> codes = np.array([0, 1, 2, 2], np.uint16)
    >>> cell_scores(table, codes, np.array([0, 2]), np.array([2, 2]))
    array([3., 1.], dtype=float32)
    """
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    out = np.empty(offsets.shape[0], dtype=np.float32)
    if out.size == 0:
        return out
    kernel = native.load() if use_native else None
    if kernel is not None:
        table = np.ascontiguousarray(table, dtype=np.float32)
        codes = np.ascontiguousarray(codes, dtype=np.uint16)
        if threads is None:
            threads = native.default_threads() if int(lengths.sum()) >= SPLIT_TOKENS else 1
        if table.shape[1] % 32 or table.shape[1] == 0:  # the kernel reads 32 lanes a pass
            table = np.pad(table, ((0, 0), (0, -table.shape[1] % 32 or 32)))
        if kernel.cell_scores(table, codes, offsets, lengths, out, threads) != 0:
            raise MuveraError("token cells: a code or a span does not fit the cell file")
        return out
    return _numpy_scores(table, codes, offsets, lengths, out)


def _numpy_scores(
    table: npt.NDArray[np.float32],
    codes: npt.NDArray[np.uint16],
    offsets: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    out: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    ends = offsets + lengths
    if (offsets < 0).any() or (lengths < 0).any() or int(ends.max()) > codes.shape[0]:
        raise MuveraError("token cells: a span does not fit the cell file")
    out[:] = -np.inf
    full = np.flatnonzero(lengths > 0)
    if full.size == 0:
        return out
    rows = np.concatenate([np.arange(offsets[j], ends[j]) for j in full])
    picked = codes[rows]
    if picked.size and int(picked.max()) >= table.shape[0]:
        raise MuveraError("token cells: a code does not fit the cell file")
    starts = np.concatenate([[0], np.cumsum(lengths[full])[:-1]])
    out[full] = np.maximum.reduceat(table[picked], starts, axis=0).sum(axis=1)
    return out
