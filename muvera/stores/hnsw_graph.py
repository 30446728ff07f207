"""A read-only view of an hnswlib index file, searched over int8 codes by the compiled kernel.

hnswlib keeps float32 vectors; over 10,240-dim FDEs its search is memory-bound (every
visited node reads 40 KiB). :class:`QuantizedGraph` reads the graph (its neighbour lists,
entry point, deletion marks and labels) from the file hnswlib saved, keeps an int8 copy of
the vectors (one scale per row: a quarter of the bytes) and runs the same search walk in
``muvera_graph_search`` (``_kernels.c``). Rows already quantized are kept when the file is
re-read after an append, so a commit costs only the new rows.

The file layout is hnswlib's ``saveIndex`` (stable since hnswlib 0.5): a 96-byte header,
then ``cur_element_count`` level-0 records of ``size_data_per_element`` bytes (neighbour
list, vector, label), then each element's upper-level lists. :func:`read_header` checks
every field against what the layout implies; a file it does not recognise makes
:meth:`QuantizedGraph.read` return None and the caller keeps using hnswlib.

A **links file** is the same graph without the vectors (the walk reads the codes, never
the vectors: at 10,240 dims they are 40 KiB of each row's 40.1): a 16-byte header
(:data:`LINKS_HEADER`: magic ``b"MUVLINKS"``, version, dimension), hnswlib's 96-byte header
as hnswlib wrote it (the full layout's sizes), each row's level-0 record without its vector
(neighbour list, label), then the upper-level lists as hnswlib wrote them. Its rows' vectors
are then the dequantized codes (:meth:`QuantizedGraph.vectors`);
:mod:`muvera.stores.hnsw_links` writes one from an hnswlib file and back.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import MuveraError

__all__ = [
    "HEADER",
    "LINKS_HEADER",
    "LINKS_MAGIC",
    "LINKS_VERSION",
    "HnswHeader",
    "QuantizedGraph",
    "quantize_rows",
    "read_header",
]

HEADER = struct.Struct("<QQQQQQiIQQQdQ")  # hnswlib's saveIndex header, 96 bytes
LINKS_HEADER = struct.Struct("<8sII")  # a links file's own header: magic, version, dimension
LINKS_MAGIC = b"MUVLINKS"
LINKS_VERSION = 1
MAX_DIMENSION = 65536  # int32 inner products of int8 codes cannot overflow below this
_CHUNK_BYTES = 1 << 24  # rows quantized per numpy pass: about 16 MiB of float32


@dataclass(frozen=True)
class HnswHeader:
    """The fields of an hnswlib index file header that the search needs."""

    count: int  # cur_element_count
    record_bytes: int  # size_data_per_element
    label_offset: int
    data_offset: int  # = size of a level-0 neighbour list
    max_level: int
    entry: int
    max_m: int
    max_m0: int
    dimension: int


def read_header(
    buffer: Any, dimension: int, empty: bool = False, links: bool = False
) -> HnswHeader | None:
    """Parse and check the header of an hnswlib "ip"/"l2" float32 index of ``dimension``;
    None when the bytes do not have the layout this module reads (``empty``: an index
    with no rows, whose top level is -1, passes too; ``links``: a links file, whose hnswlib
    header follows its own and whose records hold no vectors)."""
    start = LINKS_HEADER.size if links else 0
    if len(buffer) < start + HEADER.size:
        return None
    fields = HEADER.unpack_from(buffer, start)
    offset0, _max_elements, count, record, label_off, data_off, max_level, entry = fields[:8]
    max_m, max_m0 = fields[8:10]
    stored = data_off + 8 if links else record  # the bytes of a record in the file
    ok = (
        offset0 == 0
        and data_off == 4 * (max_m0 + 1)
        and label_off == data_off + 4 * dimension
        and record == label_off + 8
        and 0 < max_m <= max_m0 < 65536
        and (max_level >= 0 or (empty and count == 0))
        and (count == 0 or entry < count)
        and len(buffer) >= start + HEADER.size + count * stored + 4 * count
    )
    if not ok:
        return None
    return HnswHeader(
        int(count), int(record), int(label_off), int(data_off), int(max_level), int(entry),
        int(max_m), int(max_m0), dimension,
    )  # fmt: skip


def quantize_rows(
    rows: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """int8 codes of float32 rows ``(n, d)``, one scale per row: ``codes = round(x / s)``
    with ``s = max|x| / 127`` (all-zero rows: codes 0, scale 0).

    Returns ``codes`` int8 ``(n, d)`` and ``meta`` float32 ``(n, 2)``: the scale and the sum
    of the codes (the compiled kernel's VNNI path needs it).

    >>> codes, meta = quantize_rows(np.array([[0.5, -1.0, 0.25], [0, 0, 0]], np.float32))
    >>> codes.tolist(), meta.tolist()
    ([[64, -127, 32], [0, 0, 0]], [[0.007874015718698502, -31.0], [0.0, 0.0]])
    """
    rows = np.asarray(rows, dtype=np.float32)
    top = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(rows.shape[0], np.float32)
    scale = (top / np.float32(127)).astype(np.float32)
    inv = np.divide(np.float32(127), top, out=np.zeros_like(top), where=top > 0)
    codes = np.clip(np.rint(rows * inv[:, None]), -127, 127).astype(np.int8)
    meta = np.stack([scale, codes.sum(axis=1, dtype=np.int64).astype(np.float32)], axis=1)
    return codes, meta


class QuantizedGraph:
    """The graph of an hnswlib index file with int8 codes of its vectors.

    Use :meth:`read` (None when the file is not in the expected layout), then
    :meth:`search`; :meth:`read` again with ``previous=`` after the file was re-saved.
    """

    def __init__(self, header: HnswHeader, buffer: mmap.mmap, links_file: bool = False) -> None:
        self.header = header
        self._buffer = buffer
        self.links_file = links_file  # a links file: no vectors in it (module docstring)
        n, d = header.count, header.dimension
        self.start = (LINKS_HEADER.size if links_file else 0) + HEADER.size  # the records
        stride = header.data_offset + 8 if links_file else header.record_bytes
        self.label_at = header.data_offset if links_file else header.label_offset
        self.records = np.frombuffer(
            buffer, dtype=np.uint8, count=n * stride, offset=self.start
        ).reshape(n, stride)
        # each record's neighbour list, flags and label, read in chunks whose file pages are
        # released after each (a page per record would otherwise map, with the kernel's
        # fault-around, all of the file into this process: its whole size in peak RSS)
        links = np.empty((n, header.data_offset), np.uint8)
        labels = np.empty((n, 8), np.uint8)
        step = max(1, _CHUNK_BYTES // max(stride, 1))
        for row in range(0, n, step):
            part = self.records[row : row + step]
            links[row : row + step] = part[:, : header.data_offset]
            labels[row : row + step] = part[:, self.label_at : self.label_at + 8]
            self.release_pages()
        self.links0 = links.view(np.uint32)
        self.deleted = np.ascontiguousarray(links[:, 2] & 1)  # hnswlib's DELETE_MARK
        self.has_deleted = bool(self.deleted.any())
        self.labels = labels.view(np.uint64).ravel().astype(np.int64)
        self.upper, self.upper_start, n_lists = self._upper_lists(
            buffer, header, self.start + n * stride
        )
        # each row's top level, and the level (1, 2, ...) of each upper-level list
        self.levels = np.zeros(header.count, np.int64)
        self.list_levels = np.zeros(0, np.int64)
        if n_lists:
            rows = np.flatnonzero(self.upper_start >= 0)
            starts = self.upper_start[rows]
            self.levels[rows] = np.append(starts[1:], n_lists) - starts
            first = np.zeros(n_lists, np.int64)
            first[starts] = starts
            self.list_levels = np.arange(n_lists) - np.maximum.accumulate(first) + 1
        self._check_links()
        self._code_buffer = np.zeros((0, d), np.int8)  # rows 0 .. n of it are self.codes
        self._meta_buffer = np.zeros((0, 2), np.float32)
        self.codes = self._code_buffer
        self.meta = self._meta_buffer

    def _check_links(self) -> None:
        """What the compiled walk relies on, checked before it runs (a file can come from
        anyone): neighbour counts within the lists (<= max_m0, <= max_m), the entry point
        on the top level, and every neighbour of a level-l list itself on level l or above
        (the walk reads that neighbour's level-l list next). Ids >= count are skipped by
        the walk. Raises MuveraError."""
        h = self.header
        if h.count == 0:
            return
        if int((self.links0[:, 0] & 0xFFFF).max()) > h.max_m0:
            raise MuveraError("hnswlib file: a level-0 neighbour list is longer than max_m0")
        levels = self.levels
        if h.max_level > 0 and int(levels[h.entry]) < h.max_level:
            raise MuveraError("hnswlib file: the entry point is not on the top level")
        n_lists = len(self.list_levels)
        if not n_lists:
            return
        counts = (self.upper[:n_lists, 0] & 0xFFFF).astype(np.int64)
        if int(counts.max()) > h.max_m:
            raise MuveraError("hnswlib file: an upper-level neighbour list is longer than max_m")
        ids = self.upper[:n_lists, 1:].astype(np.int64)
        used = np.arange(h.max_m)[None, :] < counts[:, None]
        inside = used & (ids < h.count)
        below = levels[np.where(inside, ids, 0)] < self.list_levels[:, None]
        if bool((below & inside).any()):
            raise MuveraError("hnswlib file: an upper-level list links to a node below its level")

    @staticmethod
    def _upper_lists(
        buffer: mmap.mmap, header: HnswHeader, pos: int
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64], int]:
        """All upper-level lists (read from ``pos`` on), (lists, max_m + 1) uint32 (at
        least one row), the first list of each row (-1 for rows on level 0 only), and the
        number of lists."""
        n, width = header.count, 4 * (header.max_m + 1)
        start = np.full(n, -1, dtype=np.int64)
        spans: list[tuple[int, int]] = []
        lists = 0
        unpack = struct.Struct("<I").unpack_from
        for i in range(n):
            if pos + 4 > len(buffer):
                raise MuveraError("hnswlib file: truncated in its upper-level lists")
            (size,) = unpack(buffer, pos)
            pos += 4
            if size:
                if size % width or pos + size > len(buffer):
                    raise MuveraError("hnswlib file: an upper-level list runs past the file")
                start[i] = lists
                spans.append((pos, size))
                lists += size // width
                pos += size
        upper = np.zeros((max(lists, 1), header.max_m + 1), np.uint32)
        flat = upper.reshape(-1).view(np.uint8)
        at = 0
        for pos, size in spans:
            flat[at : at + size] = np.frombuffer(buffer, np.uint8, size, pos)
            at += size
        return upper, start, lists

    @classmethod
    def mapped(cls, path: Path, dimension: int) -> QuantizedGraph | None:
        """The file mapped, its header and lists checked, nothing quantized yet: None when it
        is not an hnswlib index of ``dimension`` in the expected layout; MuveraError when it
        is, but its lists break the rules the compiled walk relies on (:meth:`_check_links`)."""
        with path.open("rb") as fh:
            try:
                buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # an empty file
                return None
        links = buffer[: len(LINKS_MAGIC)] == LINKS_MAGIC
        if links:
            if len(buffer) < LINKS_HEADER.size:
                raise MuveraError(f"{path.name}: a links file cut short in its header")
            _, version, d = LINKS_HEADER.unpack_from(buffer, 0)
            if version != LINKS_VERSION:
                raise MuveraError(
                    f"{path.name}: links file version {version}; this muvera reads version "
                    f"{LINKS_VERSION}: upgrade muvera"
                )
            if d != dimension:
                raise MuveraError(f"{path.name}: a graph of dimension {d}, not {dimension}")
        header = read_header(buffer, dimension, links=links)
        if header is None and links:  # no hnswlib to fall back on: it holds no vectors
            raise MuveraError(f"{path.name}: a links file in a layout this muvera does not read")
        return None if header is None else cls(header, buffer, links)

    @classmethod
    def read(
        cls,
        path: Path,
        dimension: int,
        previous: QuantizedGraph | None = None,
        stored: tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]] | None = None,
    ) -> QuantizedGraph | None:
        """Map the hnswlib file ``path`` and quantize its vectors: only the rows beyond
        ``previous``'s when given (hnswlib never moves a stored vector), else beyond the
        ``stored`` codes and scales of the first rows (the index's persisted ones, used in
        place when they cover every row); None or MuveraError as for :meth:`mapped`,
        None too beyond ``MAX_DIMENSION``."""
        graph = cls.mapped(path, dimension) if dimension <= MAX_DIMENSION else None
        if graph is not None:
            graph._quantize(previous, stored)
            graph.release_pages()  # the neighbour lists' pages too
        return graph

    @classmethod
    def check(cls, path: Path, dimension: int) -> None:
        """Before hnswlib itself loads ``path`` (its search reads neighbour ids unchecked):
        an hnswlib file of ``dimension`` in the layout this module reads, its lists checked
        as :meth:`read` checks them, and every neighbour id used below the row count;
        MuveraError otherwise."""
        graph = cls.mapped(path, dimension)
        if graph is not None and graph.links_file:
            raise MuveraError(f"{path.name}: a links file (no vectors): hnswlib cannot load it")
        if graph is not None:
            graph._check_ids()
            return
        with path.open("rb") as fh:
            head = fh.read(HEADER.size)
        if read_header(head, dimension, empty=True) is None:  # not even an empty index
            raise MuveraError(f"{path.name}: not an hnswlib index of dimension {dimension}")

    def _check_ids(self) -> None:
        h = self.header
        if h.count == 0:
            return
        for lists, width in (
            (self.links0, h.max_m0),
            (self.upper[: len(self.list_levels)], h.max_m),
        ):
            counts = (lists[:, 0] & 0xFFFF).astype(np.int64)
            used = np.arange(width)[None, :] < counts[:, None]
            if bool((lists[:, 1 : width + 1][used] >= h.count).any()):
                raise MuveraError("hnswlib file: a neighbour list links to a row that is not there")

    def _quantize(
        self,
        previous: QuantizedGraph | None,
        stored: tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]] | None = None,
    ) -> None:
        """Codes of every row: those of ``previous`` (or ``stored``) are kept, in its
        buffers when they are writable and have room (rows past its count are never read
        through it), else in buffers twice as large; only the new rows are read from the
        file. ``stored`` covering every row is used as it is (a read-only map)."""
        n, d = self.header.count, self.header.dimension
        source: tuple[Any, Any] | None = None
        if previous is not None and previous.header.dimension == d:
            source = (previous.codes, previous.meta)
        elif stored is not None and stored[0].ndim == 2 and stored[0].shape[1] == d:
            if stored[0].shape[0] == n:
                self._code_buffer, self._meta_buffer = stored
                self.codes, self.meta = stored
                return
            source = stored
        kept = min(source[0].shape[0], n) if source is not None else 0
        if self.links_file and kept < n:
            raise MuveraError("a links file's codes must be read from its codes file")
        if (
            previous is not None and source is not None and kept
            and previous._code_buffer.shape[0] >= n and previous._code_buffer.flags.writeable
        ):  # fmt: skip
            self._code_buffer, self._meta_buffer = previous._code_buffer, previous._meta_buffer
        else:  # pages of an np.empty buffer cost memory only once written
            # room to grow only for a graph re-read after appends (``previous``)
            capacity = max(n, 2 * kept) if kept < n and previous is not None else n
            self._code_buffer = np.empty((capacity, d), np.int8)
            self._meta_buffer = np.empty((capacity, 2), np.float32)
            if kept and source is not None:
                self._code_buffer[:kept] = source[0][:kept]
                self._meta_buffer[:kept] = source[1][:kept]
        self.codes, self.meta = self._code_buffer[:n], self._meta_buffer[:n]
        step = max(1, _CHUNK_BYTES // max(4 * d, 1))
        for first in range(kept, n, step):
            rows = self.vectors(np.arange(first, min(first + step, n)))
            self.codes[first : first + rows.shape[0]], self.meta[first : first + rows.shape[0]] = (
                quantize_rows(rows)
            )
            self.release_pages()

    def move_to_links(self, path: Path) -> None:
        """Read from now on the links file written from this graph (``path``): the same
        lists, parsed already, mapped from the new file without its vectors."""
        with path.open("rb") as fh:
            buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        if (
            buffer[: len(LINKS_MAGIC)] != LINKS_MAGIC
            or read_header(buffer, self.header.dimension, links=True) != self.header
        ):
            raise MuveraError(f"{path.name}: not the links file of this graph")
        h = self.header
        self._buffer, self.links_file, self.label_at = buffer, True, h.data_offset
        self.start = LINKS_HEADER.size + HEADER.size
        stride = h.data_offset + 8
        self.records = np.frombuffer(
            buffer, dtype=np.uint8, count=h.count * stride, offset=self.start
        ).reshape(h.count, stride)

    def release_pages(self) -> None:
        """Unmap the file pages read so far from this process (they stay in the page cache):
        reading every record of a large index would otherwise count it all in its memory."""
        advice = getattr(mmap, "MADV_DONTNEED", None)
        if advice is not None and hasattr(self._buffer, "madvise"):
            with contextlib.suppress(OSError):  # advice only
                self._buffer.madvise(advice)

    def __len__(self) -> int:
        return self.header.count

    def vectors(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """The float32 vectors of ``rows`` (row numbers, not labels), ``(len(rows), d)``: of
        a links file, the codes times their scales."""
        h = self.header
        if self.links_file:
            if self.codes.shape[0] != h.count:
                raise MuveraError("a links file's vectors are its codes: none are read yet")
            return self.codes[rows].astype(np.float32) * self.meta[rows, :1]
        return np.ascontiguousarray(self.records[rows, h.data_offset : h.label_offset]).view(
            np.float32
        )

    def excluded(self, allowed: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
        """uint8 per row: 1 where the row is deleted or its label is not ``allowed`` (a
        mask over labels; labels beyond it are not allowed)."""
        inside = self.labels < allowed.size
        ok = inside & allowed[np.where(inside, self.labels, 0)]
        return np.ascontiguousarray(self.deleted | ~ok, dtype=np.uint8)

    def search(
        self,
        kernel: Any,
        queries: npt.NDArray[np.float32],
        k: int,
        ef: int,
        n_threads: int,
        excluded: npt.NDArray[np.uint8] | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Top ``k`` rows per query by inner product on the codes, best first: row numbers
        int64 ``(n_q, k)`` and scores float32 ``(n_q, k)``, padded with -1 / -inf.
        ``excluded`` (:meth:`excluded`) replaces the deletion marks: rows walked through,
        never returned."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n_q = queries.shape[0]
        rows = np.full((n_q, k), -1, dtype=np.int64)
        scores = np.full((n_q, k), -np.inf, dtype=np.float32)
        counts = np.zeros(n_q, dtype=np.int64)  # the kernel writes only the first counts[i]
        h = self.header
        deleted = self.deleted if excluded is None else excluded
        kernel.graph_search(
            self.codes, self.meta, self.links0, self.upper, self.upper_start, deleted,
            self.has_deleted if excluded is None else bool(excluded.any()),
            h.entry, h.max_level, queries, ef, rows, scores, counts, n_threads,
        )  # fmt: skip
        return rows, scores
