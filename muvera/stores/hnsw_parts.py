"""The graph files of the hnswlib store: one main graph and the segments committed after it.

A commit writes the rows added since the last one as a new **segment** (an hnswlib file of
those rows only), so its cost follows what it adds, not the index's size; deletes change no
graph file (dead rows are masked by the index's live labels when the graph is read). A
commit that would leave more than :data:`MAX_SEGMENTS` segments **merges** them and its
rows into one segment (hnswlib loads the oldest and inserts the others' rows after its
own: a cost that follows the segments, not the main graph); one whose segments would hold
:data:`FOLD_RATIO` of the main graph's rows **folds** everything into a new main graph the
same way. The main graph grows by at least that ratio at each fold, so each row is
rewritten in it a bounded number of times (about ``(1 + FOLD_RATIO) / FOLD_RATIO``)
however the index grows.

A graph file of :func:`seal_rows` rows or more (:data:`SEAL_BYTES` of float32 FDEs, 4 GiB:
524,288 rows at 2,048 dims) is **sealed**: the leading sealed files are kept by every
commit, and the rules above apply to the files after them (:func:`plan_keep`). A merge
or a fold writes graphs of at most that many rows, one after the other (a bulk of a
million rows becomes several files in one commit), so a writer never holds more than one
such graph's float32 copy in hnswlib, however large the index; a search walks one more
graph per sealed file. The FDEs a writer adds before its commit are held in memory up to
64 MiB and in an unlinked scratch file past that (:class:`Scratch`).

Each graph file has its int8 codes in a file of its own, written with it
(:mod:`.hnsw_codes`): a merge or a fold inserts the rows on every thread, in whatever order
hnswlib numbers them, and writes the new graph's codes in that order (the rows of the graph
file it loaded keep their numbers, and their codes are copied; the others are quantized
from the new file).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import MuveraError
from .hnsw_codes import is_codes_name
from .hnsw_graph import QuantizedGraph

__all__ = [
    "FOLD_RATIO",
    "MAX_SEGMENTS",
    "Part",
    "Scratch",
    "Spilled",
    "mark_deleted",
    "merge_top",
    "parse_segments",
    "plan_commit",
    "plan_keep",
    "rescore",
    "scan_rows",
    "seal_rows",
    "search_hnswlib",
]

MAX_SEGMENTS = 8  # a search walks the main graph and at most this many segments
FOLD_RATIO = 0.25  # segments holding this share of the main graph's rows are folded into it
SEAL_BYTES = 1 << 32  # float32 FDE bytes of a graph file that commits no longer rewrite
_NAME = re.compile(r"hnsw-[0-9]{6,}\.bin")
_CHUNK_BYTES = 1 << 26  # float32 rows copied per hnswlib insert call in a fold


@dataclasses.dataclass
class Part:
    """One graph file: ``count`` rows, global rows ``first .. first + count``; its int8
    graph when searched by the compiled walk, its ``hnswlib.Index`` when loaded."""

    file: Path
    count: int
    first: int
    graph: QuantizedGraph | None = None
    index: Any = None
    codes: str | None = None  # its codes file (hnsw_codes), None before it is written

    def mark_dead(self, live: npt.NDArray[np.bool_]) -> None:
        """Mask the rows whose labels are not ``live`` (labels beyond it: dead too)."""
        graph = self.graph
        if graph is None or graph.header.count == 0:
            return
        labels = graph.labels
        inside = (labels >= 0) & (labels < live.size)
        dead = ~inside
        dead[inside] = ~live[labels[inside]]
        if dead.any():
            graph.deleted |= dead.astype(np.uint8)
            graph.has_deleted = True

    def mark_labels(self, labels: npt.NDArray[np.int64]) -> None:
        """Mask the rows of ``labels`` (those in this part) in its graph and its index."""
        if self.graph is not None and self.graph.header.count:
            hit = np.isin(self.graph.labels, labels)
            if hit.any():
                self.graph.deleted |= hit.astype(np.uint8)
                self.graph.has_deleted = True
        if self.index is not None:
            mark_deleted(self.index, labels)

    def vectors(self, dimension: int) -> Any:
        """``(labels, float32 vectors)`` of every row in order, in chunks (a fold's input)."""
        graph = self.graph
        if graph is None and self.index is None:
            graph = QuantizedGraph.mapped(self.file, dimension)
        if graph is None:  # a layout the reader does not parse: hnswlib reads it
            labels = np.asarray(self.index.get_ids_list(), np.int64)
            labels.sort()
            step = max(1, _CHUNK_BYTES // max(4 * self.index.dim, 1))
            for start in range(0, labels.size, step):
                part = labels[start : start + step]
                yield part, np.asarray(self.index.get_items(part), np.float32)
            return
        step = max(1, _CHUNK_BYTES // max(4 * graph.header.dimension, 1))
        for start in range(0, graph.header.count, step):
            rows = np.arange(start, min(start + step, graph.header.count))
            yield graph.labels[rows], graph.vectors(rows)
            graph.release_pages()


@dataclasses.dataclass(frozen=True)
class Spilled:
    """``rows`` FDEs added since the last commit that the writer keeps in its scratch file
    (an unlinked temporary file: nothing is left behind by a crash), float32 ``(rows,
    dimension)`` from byte ``offset``; read back a chunk at a time, so that a bulk of
    millions of documents holds its FDEs on disk, not in memory."""

    file: Any  # the open binary scratch file
    offset: int
    rows: int
    dimension: int

    def chunks(self) -> Any:
        """``(first row, float32 (n, dimension))`` of every chunk of about
        :data:`_CHUNK_BYTES`, in order (each a fresh array, not a view of the file)."""
        step = max(1, _CHUNK_BYTES // max(4 * self.dimension, 1))
        for start in range(0, self.rows, step):
            out = np.empty((min(step, self.rows - start), self.dimension), np.float32)
            at = self.offset + 4 * start * self.dimension
            if os.preadv(self.file.fileno(), [out.data.cast("B")], at) != out.nbytes:
                raise MuveraError("hnswlib store: the scratch file of uncommitted FDEs is short")
            yield start, out


class Scratch:
    """A writer's scratch file of uncommitted FDEs: created unlinked in the index folder
    (its disk, not /tmp's; nothing to clean up after a crash), appended to, read back
    through :class:`Spilled` handles, freed by :meth:`close`."""

    def __init__(self, directory: Path) -> None:
        try:
            self.file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close)
        except OSError as exc:
            raise MuveraError(f"cannot create a scratch file in {directory}: {exc}") from None

    def append(self, fdes: npt.NDArray[np.float32]) -> Spilled:
        """``fdes`` (C-contiguous float32 ``(n, dimension)``) at the end of the file."""
        try:
            offset = self.file.seek(0, 2)
            self.file.write(fdes.data.cast("B"))
            self.file.flush()
        except OSError as exc:
            raise MuveraError(f"cannot write the scratch file of uncommitted FDEs: {exc}") from None
        return Spilled(self.file, offset, fdes.shape[0], fdes.shape[1])

    def close(self) -> None:
        self.file.close()


def batch_chunks(fdes: Any) -> Any:
    """``(first row, float32 rows)`` of a pending batch: an array in one piece, a
    :class:`Spilled` one chunk at a time."""
    if isinstance(fdes, Spilled):
        yield from fdes.chunks()
    else:
        yield 0, fdes


def mark_deleted(index: Any, labels: npt.NDArray[np.int64]) -> None:
    """hnswlib's deletion mark on each of ``labels`` it holds (others are skipped)."""
    for label in np.asarray(labels, np.int64).tolist():
        try:
            index.mark_deleted(int(label))
        except RuntimeError:  # not in this graph, or marked already
            continue


def parse_segments(value: Any) -> list[tuple[str, int, str | None]]:
    """The entry's ``segments``: ``[{"file": "hnsw-<gen>.bin", "count": rows >= 1,
    "codes_file": "hnsw-<gen>.codes" (optional)}]`` as ``(file, count, codes file or
    None)``; MuveraError for anything else (a manifest can come from anyone)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise MuveraError("hnswlib store: the segments section is not a list")
    out = []
    for item in value:
        name = item.get("file") if isinstance(item, dict) else None
        count = item.get("count") if isinstance(item, dict) else None
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise MuveraError(f"hnswlib store: segment file {name!r} is not hnsw-<gen>.bin")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise MuveraError(f"hnswlib store: segment {name} has {count!r} rows")
        codes = item.get("codes_file")
        if codes is not None and not is_codes_name(codes):
            raise MuveraError(f"hnswlib store: codes file {codes!r} is not hnsw-<gen>.codes")
        out.append((name, count, codes))
    if len({name for name, _, _ in out}) != len(out):
        raise MuveraError("hnswlib store: a segment file is listed twice")
    return out


def plan_commit(main_rows: int, segment_rows: list[int], new_rows: int) -> str:
    """What a commit adding ``new_rows`` writes: ``"segment"`` (the new rows in a graph
    file of their own), ``"merge"`` (the segments and the new rows in one segment: there
    would be more than :data:`MAX_SEGMENTS`) or ``"fold"`` (one new main graph of every row:
    there is none yet, or the segments would hold :data:`FOLD_RATIO` of its rows).

    >>> plan_commit(1000, [], 10), plan_commit(1000, [100, 100], 60), plan_commit(0, [], 5)
    ('segment', 'fold', 'fold')
    >>> plan_commit(10**6, [1] * MAX_SEGMENTS, 1)
    'merge'
    """
    if main_rows == 0 or sum(segment_rows) + new_rows >= FOLD_RATIO * main_rows:
        return "fold"
    return "merge" if len(segment_rows) + 1 > MAX_SEGMENTS else "segment"


def seal_rows(dimension: int) -> int:
    """Rows of a **sealed** graph file: one of this many rows or more is never rewritten
    by a commit, and a commit's merge writes graphs of at most this many, so a writer
    holds at most :data:`SEAL_BYTES` of hnswlib's float32 copy however large the index.

    >>> seal_rows(2048), seal_rows(10240)
    (524288, 104857)
    """
    return max(1, SEAL_BYTES // (4 * max(dimension, 1)))


def plan_keep(rows: list[int], new_rows: int, sealed: int) -> int:
    """How many of the graph files of ``rows`` rows (main graph first, then segments) a
    commit adding ``new_rows`` keeps; it rewrites the others and the new rows
    (``HnswStore._merge``). The leading files of ``sealed`` rows or more are kept; the
    others are planned by :func:`plan_commit` as a main graph and its segments (a fold
    keeps none of them, a merge their main graph, a segment all).

    >>> plan_keep([1000], 10, 10**6), plan_keep([1000, 100, 100], 60, 10**6)
    (1, 0)
    >>> plan_keep([], 5, 10), plan_keep([600, 600, 50], 100, 500), plan_keep([600, 300], 5, 500)
    (0, 2, 2)
    """
    done = 0
    while done < len(rows) and rows[done] >= sealed:
        done += 1
    rest = rows[done:]
    plan = plan_commit(rest[0] if rest else 0, rest[1:], new_rows)
    return done + {"fold": 0, "merge": 1, "segment": len(rest)}[plan]


def merge_top(
    parts: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The best ``k`` per query over several ``(labels, scores)`` results (each ``(n_q, *)``,
    padded with -1 / -inf), best first, padded the same way.

    >>> a = (np.array([[3, 1]]), np.array([[0.9, 0.2]], np.float32))
    >>> b = (np.array([[7, -1]]), np.array([[0.5, -np.inf]], np.float32))
    >>> labels, scores = merge_top([a, b], 3)
    >>> labels.tolist(), [round(float(x), 6) for x in scores[0]]
    ([[3, 7, 1]], [0.9, 0.5, 0.2])
    """
    if len(parts) == 1 and parts[0][0].shape[1] == k:
        return parts[0]
    labels = np.concatenate([p[0] for p in parts], axis=1)
    scores = np.concatenate([p[1] for p in parts], axis=1).astype(np.float32)
    scores = np.where(labels >= 0, scores, -np.inf).astype(np.float32)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out_labels = np.full((labels.shape[0], k), -1, np.int64)
    out_scores = np.full((labels.shape[0], k), -np.inf, np.float32)
    take = order.shape[1]
    out_labels[:, :take] = np.take_along_axis(labels, order, axis=1)
    out_scores[:, :take] = np.take_along_axis(scores, order, axis=1)
    out_labels[~np.isfinite(out_scores)] = -1
    return out_labels, out_scores


def rescore(
    graph: QuantizedGraph,
    queries: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """float32 inner products of the rows found (best first again; ``rows`` reordered)."""
    for i in range(rows.shape[0]):
        found = rows[i] >= 0
        if not found.any():
            continue
        exact = graph.vectors(rows[i, found]) @ np.asarray(queries[i], np.float32)
        order = np.argsort(-exact, kind="stable")
        rows[i, : order.size] = rows[i, found][order]
        scores[i, : order.size] = exact[order]
    return scores


def search_hnswlib(
    index: Any,
    queries: npt.NDArray[np.float32],
    take: int,
    ef: int,
    threads: int,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Top ``take`` labels and inner products per query from an ``hnswlib.Index`` (its
    marked rows skipped, and the labels ``allowed`` does not permit when given), padded
    with -1 / -inf; ``ef`` is restored afterwards."""
    n_q = queries.shape[0]
    out_labels = np.full((n_q, take), -1, dtype=np.int64)
    out_scores = np.full((n_q, take), -np.inf, dtype=np.float32)
    rows = index.get_current_count()
    allow = None
    if allowed is not None:
        n_allowed = allowed.size
        allow = lambda label: label < n_allowed and bool(allowed[label])  # noqa: E731
    want = min(take, rows)
    if want == 0:
        return out_labels, out_scores
    index.set_ef(min(max(ef, want), max(want, rows)))
    try:
        labels, distances = index.knn_query(queries, k=want, num_threads=threads, filter=allow)
        out_labels[:, :want] = labels
        out_scores[:, :want] = 1.0 - distances  # hnswlib's "ip" distance is 1 - <q, x>
    except RuntimeError:
        # Too few reachable live points for `want` (many deletions): ask one query at a
        # time for as many as the graph yields.
        for i in range(n_q):
            for fewer in range(want, 0, -1):
                try:
                    labels, distances = index.knn_query(queries[i : i + 1], k=fewer, filter=allow)
                except RuntimeError:
                    continue
                out_labels[i, :fewer] = labels[0]
                out_scores[i, :fewer] = 1.0 - distances[0]
                break
    finally:
        index.set_ef(ef)
    return out_labels, out_scores


def scan_rows(
    batches: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]],
    queries: npt.NDArray[np.float32],
    take: int,
    live: npt.NDArray[np.bool_],
    allowed: npt.NDArray[np.bool_] | None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Exact inner products of ``queries`` with the rows of ``batches`` (``(labels,
    float32 FDEs)``, the rows added since the last commit): the best ``take`` whose labels
    are ``live`` (and ``allowed``), padded with -1 / -inf. Batch by batch (no copy of
    them all: a bulk may hold millions)."""
    queries = np.asarray(queries, np.float32)
    n_q = queries.shape[0]
    best = (np.full((n_q, take), -1, np.int64), np.full((n_q, take), -np.inf, np.float32))
    for all_labels, batch in batches:
        for start, fdes in batch_chunks(batch):
            labels = all_labels[start : start + fdes.shape[0]]
            best = _scan_chunk(best, labels, fdes, queries, take, live, allowed)
    return best


def _scan_chunk(
    best: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]],
    labels: npt.NDArray[np.int64],
    fdes: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    take: int,
    live: npt.NDArray[np.bool_],
    allowed: npt.NDArray[np.bool_] | None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """``best`` merged with the best ``take`` of one chunk of pending rows."""
    scores = queries @ fdes.T
    inside = labels < live.size
    ok = inside & live[np.where(inside, labels, 0)]
    if allowed is not None:
        inside = labels < allowed.size
        ok &= inside & allowed[np.where(inside, labels, 0)]
    scores[:, ~ok] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :take]
    found = np.take_along_axis(scores, top, axis=1)
    best = merge_top([best, (np.where(np.isfinite(found), labels[top], -1), found)], take)
    return best
