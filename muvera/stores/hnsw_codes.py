"""The int8 codes of one graph file's rows, in a file of their own: ``hnsw-<gen>.codes``.

Each graph file of the hnswlib store (the main graph, each segment) has a codes file
written beside it, in the graph's own row order, when the graph file is written (or, for a
graph file that has none yet, at the next commit). A reader maps it instead of quantizing
every row of the graph at open. Like the graph files, a codes file never changes once
written: a merge or a fold writes a new graph file and a new codes file, so hnswlib may
number the rows it re-inserts in any order (it does with several threads).

Layout (little-endian)::

    0   8 bytes  magic b"MUVCODES"
    8   uint32   version (1)
    12  uint32   dimension d
    16  uint64   rows n
    24  uint64   offset of the scales (32 + n * d rounded up to 8)
    32  int8     codes, n x d (row-major)
        zeros    up to the scales' offset
        float32  n x 2: each row's scale and the sum of its codes (quantize_rows)

:func:`read_codes` checks every header field against what the manifest says and the file's
size against the layout, and that every scale is finite, before anything reads the codes.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import MuveraError
from ..files import file_mode, fsync_directory
from .hnsw_graph import QuantizedGraph, quantize_rows

__all__ = [
    "CODES_HEADER",
    "LEGACY_CODES",
    "LEGACY_SCALES",
    "codes_name",
    "codes_size",
    "is_codes_name",
    "legacy_codes",
    "read_codes",
    "write_codes",
]

LEGACY_CODES = "fde-codes.bin"  # the layout before codes files: one for every graph
LEGACY_SCALES = "fde-scales.bin"
MAGIC = b"MUVCODES"
VERSION = 1
CODES_HEADER = struct.Struct("<8sIIQQ")  # 32 bytes
_NAME = re.compile(r"hnsw-[0-9]{6,}\.codes")
_CHUNK_BYTES = 1 << 24  # float32 rows quantized per pass (about 16 MiB)

Codes = tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]


def codes_name(graph_file: str) -> str:
    """The codes file of a graph file.

    >>> codes_name("hnsw-000012.bin")
    'hnsw-000012.codes'
    """
    return graph_file.rsplit(".", 1)[0] + ".codes"


def is_codes_name(name: Any) -> bool:
    """Whether ``name`` is a codes file name (``hnsw-<gen>.codes``).

    >>> is_codes_name("hnsw-000012.codes"), is_codes_name("../hnsw-1.codes")
    (True, False)
    """
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def _meta_offset(rows: int, dimension: int) -> int:
    return -(-(CODES_HEADER.size + rows * dimension) // 8) * 8


def codes_size(rows: int, dimension: int) -> int:
    """Bytes of the codes file of ``rows`` rows of ``dimension``.

    >>> codes_size(3, 5)
    72
    """
    return _meta_offset(rows, dimension) + 8 * rows


def write_codes(path: Path, graph: QuantizedGraph, kept: Codes | None = None) -> None:
    """Write the codes file of ``graph`` (a mapped graph file) at ``path``: the first rows'
    codes copied from ``kept`` (codes already made for them, e.g. the graph file the new one
    was loaded from), the others quantized from the file's float32 vectors, a chunk at a
    time (the writer holds one chunk, not the whole file). Synced, then renamed into place:
    a crash leaves no partial file under ``path``'s name."""
    n, d = graph.header.count, graph.header.dimension
    start = 0 if kept is None else min(int(kept[0].shape[0]), n)
    meta_at = _meta_offset(n, d)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, file_mode())
    try:
        os.pwrite(fd, CODES_HEADER.pack(MAGIC, VERSION, d, n, meta_at), 0)
        os.ftruncate(fd, codes_size(n, d))
        step = max(1, _CHUNK_BYTES // max(4 * d, 1))
        # the kept rows' chunks, then the others' (a chunk never spans both)
        chunks = [*range(0, start, step), *range(start, n, step)]
        for first in chunks:
            stop = min(first + step, start if first < start else n)
            if first < start and kept is not None:
                codes, meta = kept[0][first:stop], kept[1][first:stop]
            else:
                codes, meta = quantize_rows(graph.vectors(np.arange(first, stop)))
                graph.release_pages()
            at = CODES_HEADER.size + first * d
            os.pwrite(fd, np.ascontiguousarray(codes, np.int8).tobytes(), at)
            os.pwrite(fd, np.ascontiguousarray(meta, "<f4").tobytes(), meta_at + first * 8)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def read_codes(path: Path, rows: int, dimension: int) -> Codes:
    """Map the codes file ``path`` of a graph of ``rows`` rows of ``dimension``: codes int8
    ``(rows, dimension)`` and meta float32 ``(rows, 2)``, read-only views of the map.
    MuveraError (naming the file) when it is missing, of another layout, version, size or
    shape, or holds a scale that is not finite."""
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as exc:
        raise MuveraError(f"cannot read the FDE codes {path.name} ({exc.strerror})") from None
    if size < CODES_HEADER.size:
        raise MuveraError(f"{path.name}: not an FDE codes file ({size} bytes)")
    magic, version, d, n, meta_at = CODES_HEADER.unpack_from(buffer, 0)
    if magic != MAGIC:
        raise MuveraError(f"{path.name}: not an FDE codes file")
    if version != VERSION:
        raise MuveraError(
            f"{path.name}: FDE codes version {version}; this muvera reads version {VERSION}: "
            "upgrade muvera"
        )
    if d != dimension or n != rows:
        raise MuveraError(
            f"{path.name}: codes of {n} rows of dimension {d}, the graph has {rows} of {dimension}"
        )
    if meta_at != _meta_offset(rows, dimension) or size != codes_size(rows, dimension):
        raise MuveraError(
            f"{path.name}: {size} bytes, codes of {rows} rows of {dimension} take "
            f"{codes_size(rows, dimension)}"
        )
    codes = np.frombuffer(buffer, np.int8, rows * dimension, CODES_HEADER.size)
    meta = np.frombuffer(buffer, "<f4", 2 * rows, meta_at)
    if rows and not np.isfinite(meta).all():
        raise MuveraError(f"{path.name}: the scales are not all finite")
    return codes.reshape(rows, dimension), meta.reshape(rows, 2).view(np.float32)


def legacy_codes(directory: Path, section: Any, graph_rows: int, dimension: int) -> Codes:
    """The codes of the first graph rows in the single-file layout of muvera before part
    codes files (``fde-codes.bin`` + ``fde-scales.bin``, the entry's ``"codes"``: ``{"file",
    "scales", "rows"}``, in the global row order of the main graph then each segment), read
    so that such an index opens without quantizing; its next commit writes part codes files
    and drops the section. Empty without a section; MuveraError when it is malformed,
    longer than the graph or its files are short."""
    empty = (np.zeros((0, dimension), np.int8), np.zeros((0, 2), np.float32))
    if section is None:
        return empty
    if (
        not isinstance(section, dict) or section.get("file") != LEGACY_CODES
        or section.get("scales") != LEGACY_SCALES
    ):  # fmt: skip
        raise MuveraError("hnswlib store: the FDE codes section is malformed")
    rows = section.get("rows")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise MuveraError(f"hnswlib store: rows is {rows!r}")
    if rows > graph_rows:
        raise MuveraError(f"hnswlib store: FDE codes of {rows} rows, the graph has {graph_rows}")
    if rows == 0:
        return empty
    try:
        codes = np.memmap(directory / LEGACY_CODES, np.int8, "r", shape=(rows, dimension))
        meta = np.memmap(directory / LEGACY_SCALES, "<f4", "r", shape=(rows, 2))
    except (OSError, ValueError) as exc:
        raise MuveraError(f"cannot read the FDE codes: {exc}") from None
    if not np.isfinite(meta).all():
        raise MuveraError(f"{LEGACY_SCALES}: the scales are not all finite")
    return codes.view(np.ndarray), meta.view(np.ndarray)
