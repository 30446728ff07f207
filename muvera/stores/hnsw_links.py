"""Graph files without their vectors ("links files") and back.

hnswlib saves each row's float32 vector inside its level-0 record; the compiled walk never
reads it (it scores the int8 codes of :mod:`.hnsw_codes`). With the hnswlib store's
``vectors=False`` (the default with ``quantization="int8"``) a commit writes each graph
as a links file (layout: :mod:`.hnsw_graph`): at 10,240 dims 40 KiB of a row's 40.1 KiB
are its vector, at 2,048 dims 8 of 8.1. hnswlib itself needs vectors to insert rows into a
graph (a merge, a fold) or to search it (a build without the compiled kernel): it loads an
hnswlib file written back from the links file with each row's dequantized codes as its
vector (:func:`restore_vectors`), the vectors the walk scores anyway.

>>> import tempfile, hnswlib
>>> from pathlib import Path
>>> from muvera.stores.hnsw_codes import read_codes, write_codes
>>> rng = np.random.default_rng(0)
>>> index = hnswlib.Index(space="ip", dim=32)
>>> index.init_index(max_elements=50, M=8)
>>> index.add_items(rng.standard_normal((50, 32)).astype(np.float32), np.arange(50))
>>> folder = Path(tempfile.mkdtemp())
>>> index.save_index(str(folder / "full.bin"))
>>> full = QuantizedGraph.mapped(folder / "full.bin", 32)
>>> write_codes(folder / "g.codes", full)
>>> strip_vectors(full, folder / "g.bin")
>>> graph = QuantizedGraph.mapped(folder / "g.bin", 32)
>>> graph.links_file, (folder / "g.bin").stat().st_size < (folder / "full.bin").stat().st_size
(True, True)
>>> graph._quantize(None, read_codes(folder / "g.codes", 50, 32))
>>> restore_vectors(graph, folder / "back.bin")
>>> back = hnswlib.Index(space="ip", dim=32)
>>> back.load_index(str(folder / "back.bin"))
>>> row = np.flatnonzero(graph.labels == 7)  # hnswlib's row of label 7
>>> back.get_current_count(), bool(np.array_equal(back.get_items([7]), graph.vectors(row)))
(50, True)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MuveraError
from ..files import file_mode, fsync_directory
from .hnsw_codes import codes_name, read_codes, write_codes
from .hnsw_graph import (
    HEADER,
    LINKS_HEADER,
    LINKS_MAGIC,
    LINKS_VERSION,
    MAX_DIMENSION,
    QuantizedGraph,
)

__all__ = ["load_hnswlib", "restore_vectors", "save_graph", "strip_vectors"]

_CHUNK_BYTES = 1 << 25  # bytes of records copied per pass (about 32 MiB)


def _write(path: Path, pieces: Iterator[bytes | memoryview], sync: bool = True) -> None:
    """Write ``pieces`` to ``path`` through a temporary file, synced (unless ``sync`` is
    False: a file read once and removed), then renamed into place: a crash leaves no
    partial file under ``path``'s name."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode()), "wb") as fh:
            for piece in pieces:
                fh.write(piece)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    if sync:
        fsync_directory(path.parent)


def _tail(graph: QuantizedGraph) -> Iterator[memoryview]:
    """The upper-level lists, bytes after the level-0 records, as the file holds them."""
    buffer = memoryview(graph._buffer)
    at = graph.start + graph.records.size
    while at < len(buffer):
        yield buffer[at : at + _CHUNK_BYTES]
        at += _CHUNK_BYTES
        graph.release_pages()


def strip_vectors(graph: QuantizedGraph, path: Path) -> None:
    """Write the links file of ``graph`` (an hnswlib file, mapped) at ``path``: every byte
    of it but the rows' vectors."""
    if graph.links_file:
        raise MuveraError("strip_vectors: the graph is a links file already")
    h = graph.header

    def pieces() -> Iterator[bytes | memoryview]:
        yield LINKS_HEADER.pack(LINKS_MAGIC, LINKS_VERSION, h.dimension)
        yield memoryview(graph._buffer)[: HEADER.size]
        step = max(1, _CHUNK_BYTES // max(h.record_bytes, 1))
        for first in range(0, h.count, step):
            records = graph.records[first : first + step]
            out = np.empty((records.shape[0], h.data_offset + 8), np.uint8)
            out[:, : h.data_offset] = records[:, : h.data_offset]
            out[:, h.data_offset :] = records[:, h.label_offset : h.label_offset + 8]
            graph.release_pages()
            yield out.data
        yield from _tail(graph)

    _write(path, pieces())


def restore_vectors(graph: QuantizedGraph, path: Path, sync: bool = True) -> None:
    """Write an hnswlib file at ``path`` from ``graph`` (a links file with its codes read):
    its records with each row's dequantized codes as the vector, for hnswlib to load."""
    if not graph.links_file:
        raise MuveraError("restore_vectors: the graph is not a links file")
    h = graph.header

    def pieces() -> Iterator[bytes | memoryview]:
        yield memoryview(graph._buffer)[LINKS_HEADER.size : graph.start]
        step = max(1, _CHUNK_BYTES // max(h.record_bytes, 1))
        for first in range(0, h.count, step):
            rows = np.arange(first, min(first + step, h.count))
            out = np.empty((rows.size, h.record_bytes), np.uint8)
            out[:, : h.data_offset] = graph.records[rows, : h.data_offset]
            out[:, h.data_offset : h.label_offset] = graph.vectors(rows).view(np.uint8)
            out[:, h.label_offset :] = graph.records[rows, h.data_offset :]
            graph.release_pages()
            yield out.data
        yield from _tail(graph)

    _write(path, pieces(), sync)


def load_hnswlib(
    path: Path | None,
    dimension: int,
    capacity: int,
    options: dict[str, int],
    codes: Path | None = None,
    scratch: Path | None = None,
) -> Any:
    """An ``hnswlib.Index`` ("ip") read from ``path`` (checked first) with room for
    ``capacity`` rows, or a new empty one; ``options``: ``M``, ``ef_construction``, ``ef``.
    A links file is written back with the vectors of its ``codes`` file into a temporary
    file in ``scratch`` (named ``.*.tmp``: a writer's open removes what a crash left there)
    or the system's temporary folder when None, loaded, then removed."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=dimension)
    if path is None:
        index.init_index(
            max_elements=max(capacity, 16),
            ef_construction=options["ef_construction"],
            M=options["M"],
        )
        index.set_ef(options["ef"])
        return index
    graph = QuantizedGraph.mapped(path, dimension) if dimension <= MAX_DIMENSION else None
    source, restored = path, None
    try:
        if graph is not None and graph.links_file:
            if codes is None:
                raise MuveraError(f"{path.name}: a links file without its codes file")
            graph._quantize(None, read_codes(codes, len(graph), dimension))
            if scratch is None:
                fd, name = tempfile.mkstemp(prefix=".muvera-", suffix=".tmp")
                os.close(fd)
                restored = Path(name)
            else:
                restored = scratch / f".{path.name}.restore.tmp"
            restore_vectors(graph, restored, sync=False)
            source = restored
        QuantizedGraph.check(source, dimension)  # before hnswlib trusts it
        try:
            index.load_index(str(source), max_elements=max(capacity, 16))
        except (RuntimeError, ValueError, MemoryError) as exc:
            raise MuveraError(f"{path.name}: hnswlib cannot load it ({exc})") from None
    finally:
        if restored is not None:
            restored.unlink(missing_ok=True)
    index.set_ef(options["ef"])
    return index


def save_graph(
    index: Any, path: Path, base: QuantizedGraph | None, links: bool, walk: bool
) -> tuple[str | None, QuantizedGraph | None]:
    """Write ``index`` (an ``hnswlib.Index``) as the graph file ``path`` and, when searched
    by the compiled ``walk``, its codes file beside it (the codes of ``base``, the graph
    file it was loaded from, copied when its rows kept their numbers, the others quantized)
    then, with ``links``, the file without its vectors. Returns the codes file's name and
    the graph searching its map (None, None without the walk or for a file in a layout it
    does not read: hnswlib's file is kept whole then)."""
    walk = walk and index.dim <= MAX_DIMENSION
    full = path.with_name(f".{path.name}.full.tmp") if links and walk else path
    try:
        index.save_index(str(full))
        with full.open("rb+") as fh:
            os.fsync(fh.fileno())
        graph = QuantizedGraph.mapped(full, index.dim) if walk else None
        if graph is None:
            if full != path:
                os.replace(full, path)
            return None, None
        kept = None  # the loaded file's rows, if hnswlib kept their numbers (it does)
        if (
            base is not None
            and len(base) <= len(graph)
            and np.array_equal(graph.labels[: len(base)], base.labels)
        ):
            kept = (base.codes, base.meta)
        name = codes_name(path.name)
        write_codes(path.with_name(name), graph, kept)
        if full != path:
            strip_vectors(graph, path)
            graph.move_to_links(path)  # its lists parsed once, from hnswlib's file
    finally:
        if full != path:
            full.unlink(missing_ok=True)
    graph._quantize(None, read_codes(path.with_name(name), len(graph), index.dim))
    graph.release_pages()
    return name, graph
