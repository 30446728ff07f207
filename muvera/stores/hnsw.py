"""The hnswlib store (the default): an HNSW graph over the FDEs, built and saved by hnswlib,
searched over int8 codes by the compiled graph walk (:mod:`muvera.stores.hnsw_graph`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .. import native
from ..errors import MuveraError
from .base import Labels, pad_topk
from .hnsw_codes import codes_name, is_codes_name, legacy_codes, read_codes, write_codes
from .hnsw_graph import MAX_DIMENSION, QuantizedGraph
from .hnsw_links import load_hnswlib
from .hnsw_merge import merge_graphs
from .hnsw_parts import (
    Part,
    Scratch,
    Spilled,
    mark_deleted,
    merge_top,
    parse_segments,
    plan_keep,
    rescore,
    scan_rows,
    seal_rows,
    search_hnswlib,
)
from .local import LocalStore

__all__ = ["HnswStore"]

# FDEs added since the last commit that a writer holds in memory; the ones added past it
# go to its scratch file (hnsw_parts.Spilled), so a bulk's memory does not grow with it
SPILL_BYTES = 1 << 26


def _count(entry: dict[str, Any], key: str, default: int = 0) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MuveraError(f"hnswlib store: {key} is {value!r}")
    return value


class HnswStore(LocalStore):
    """hnswlib HNSW graph over FDEs, inner-product space.

    Defaults (``M=12``, ``ef_construction=200``, ``ef=100``) come from the SciFact sweeps in
    ``benchmarks/`` (``bench_retrieval.py --stores hnswlib@M=16,hnswlib@M=12,hnswlib@M=8``):
    FDE top-100 + re-rank stays within 1% of exact MaxSim in every run (0.993-0.994), and
    the walk, memory-bound over 10,240-dim FDEs, visits fewer links than with ``M=16``;
    ``M=8`` loses 3%. ``M`` and ``ef_construction`` shape the graph;
    ``ef`` (search breadth) is raised to the
    number of requested neighbours when smaller, and restored on load (hnswlib does not
    persist it).

    Commits cost what they add (:mod:`.hnsw_parts`): the rows added since the last commit
    are held (and scanned exactly by the writer's searches) until the commit writes them as
    a graph **segment** of their own, or folds the segments and them into a new main graph
    when the segments would hold :data:`~.hnsw_parts.FOLD_RATIO` of its rows or number more
    than :data:`~.hnsw_parts.MAX_SEGMENTS`; graph files of
    :func:`~.hnsw_parts.seal_rows` rows are sealed (kept by every commit, so a writer's
    memory is bounded); a search walks the main graph and each segment and keeps the best.
    Deletes change no graph file: the index's live labels mask them in every graph read
    (a fold marks them with hnswlib's ``mark_deleted``).

    ``quantization="int8"`` (the default): hnswlib builds and saves the graph, and searches
    walk that same graph in the compiled kernel over an int8 copy of the FDEs (one scale per
    row, written beside each graph file as ``hnsw-<gen>.codes`` (:mod:`.hnsw_codes`), which
    a reader maps instead of quantizing every row again; a graph file without one is
    quantized at open and gets it at the next commit), which
    reads a quarter of the bytes per visited node (``benchmarks/bench_retrieval.py``
    measures both). The candidates' scores are then inner products on the int8 codes; FDE-only
    searches (``exact=True``) re-score the returned rows with the FDEs of the graph file.
    hnswlib itself is loaded only to write a graph (and released after). With
    ``graph_vectors=False`` (the default with int8) the graph files hold no vectors
    (:mod:`.hnsw_links`: a quarter of the bytes per row at 2,048 dims, 1/400 at 10,240):
    the dequantized codes stand in for them (FDE-only scores, what hnswlib loads to insert
    rows). ``quantization="none"`` (which keeps the vectors), a build without the compiled
    kernel, FDEs wider than 65,536 dims, or an hnswlib file in an unknown layout search with
    hnswlib.
    """

    kind: ClassVar[str] = "hnswlib"
    QUANTIZATIONS: ClassVar[tuple[str, ...]] = ("int8", "none")

    def __init__(
        self,
        directory: Path,
        fde_dimension: int,
        token_dimension: int,
        tokens: dict[str, Any],
        arrays: dict[str, npt.NDArray[Any]],
        entry: dict[str, Any] | None = None,
        *,
        M: int = 12,
        ef_construction: int = 200,
        ef: int = 100,
        num_threads: int = -1,
        quantization: str = "int8",
        graph_vectors: bool | None = None,
    ) -> None:
        super().__init__(directory, fde_dimension, token_dimension, tokens, arrays)
        try:
            import hnswlib  # noqa: F401
        except ImportError:
            raise MuveraError(
                "the hnswlib store needs hnswlib: pip install 'muvera-toolkit[hnswlib]'"
            ) from None
        entry = entry or {}
        self.dimension = fde_dimension
        self.M = _count(entry, "M", M)
        self.ef_construction = _count(entry, "ef_construction", ef_construction)
        self.ef = _count(entry, "ef", ef)
        self.num_threads = num_threads
        self.quantization = str(entry.get("quantization", quantization))
        for name, value in (
            ("M", self.M),
            ("ef_construction", self.ef_construction),
            ("ef", self.ef),
        ):
            if value < (2 if name == "M" else 1) or value > 1 << 16:
                low = 2 if name == "M" else 1
                raise MuveraError(f"hnswlib {name} must be in [{low}, 65536], got {value}")
        if self.quantization not in self.QUANTIZATIONS:
            raise MuveraError(
                f"hnswlib quantization must be one of {list(self.QUANTIZATIONS)}, "
                f"got {self.quantization!r}"
            )
        # indexes committed before links files keep vectors in their graph files
        default = self.quantization != "int8" if graph_vectors is None else graph_vectors
        self.graph_vectors = entry.get("graph_vectors", True if entry else default)
        if not isinstance(self.graph_vectors, bool):
            raise MuveraError(f"hnswlib graph_vectors must be a bool, got {self.graph_vectors!r}")
        if not self.graph_vectors and self.quantization != "int8":
            raise MuveraError("hnswlib graph_vectors=False needs quantization='int8'")
        main_rows = _count(entry, "count")
        segments = parse_segments(entry.get("segments"))
        main_codes = entry.get("codes_file")
        if (segments or main_rows) and not entry.get("file"):
            raise MuveraError("hnswlib store: rows without a graph file")
        if entry.get("file") in {name for name, _, _ in segments}:
            raise MuveraError("hnswlib store: the main graph file is listed as a segment")
        if main_codes is not None and (not is_codes_name(main_codes) or not entry.get("file")):
            raise MuveraError(f"hnswlib store: codes file {main_codes!r} is not hnsw-<gen>.codes")
        named = [c for c in [main_codes, *(c for _, _, c in segments)] if c is not None]
        if len(set(named)) != len(named):
            raise MuveraError("hnswlib store: a codes file is listed twice")
        self.count = main_rows + sum(n for _, n, _ in segments)
        self.deleted = _count(entry, "deleted")
        self._unmarked = _count(entry, "unmarked")  # dead rows no graph file marks
        if self.deleted > self.count or self._unmarked > self.deleted:
            raise MuveraError("hnswlib store: more deleted rows than rows")
        # codes of the first graph rows in the layout before codes files (hnsw_codes)
        self._legacy = legacy_codes(directory, entry.get("codes"), self.count, fde_dimension)
        self._parts: list[Part] = []
        if entry.get("file"):
            self._parts.append(Part(directory / entry["file"], main_rows, 0, codes=main_codes))
            for name, rows, codes in segments:
                self._parts.append(Part(directory / name, rows, self.count_in_parts(), codes=codes))
        self._pending: list[tuple[Labels, Any]] = []  # added, not saved: arrays or Spilled
        self._scratch: Scratch | None = None  # of spilled FDEs (while some are pending)
        self._held = 0  # bytes of the pending FDEs held in memory
        self._fallback = self.quantization != "int8" or native.load() is None
        for part in self._parts:
            self._open_part(part)

    def count_in_parts(self) -> int:
        """Rows in the graph files (the rows added since the last commit excluded)."""
        return sum(part.count for part in self._parts)

    def _open_part(self, part: Part, graph: QuantizedGraph | None = None) -> None:
        """Read ``part``'s graph (its persisted codes used; ``graph``: read already),
        masking dead rows; on any file the compiled walk cannot read, every part is searched
        by hnswlib from then on."""
        if not self._fallback:
            part.graph = graph if graph is not None else self._read_graph(part)
            self._fallback = part.graph is None
        if part.graph is not None and len(part.graph) != part.count:
            raise MuveraError(
                f"{part.file.name}: the graph has {len(part.graph)} rows, the manifest "
                f"says {part.count}"
            )
        part.mark_dead(self._live)
        if self._fallback:
            self._part_index(part)  # checked and loaded now, as the walk's files are

    def _read_graph(self, part: Part) -> QuantizedGraph | None:
        """``part``'s file with the int8 codes of its rows: its codes file's, else those of
        the single-file layout covering its rows, else quantized from its float32 vectors
        (None: a file the walk does not read)."""
        graph = QuantizedGraph.mapped(part.file, self.dimension)
        if graph is None or self.dimension > MAX_DIMENSION:
            return None
        if len(graph) != part.count:
            raise MuveraError(
                f"{part.file.name}: the graph has {len(graph)} rows, the manifest says {part.count}"
            )
        stored = None
        if part.codes is not None:
            stored = read_codes(part.file.parent / part.codes, part.count, self.dimension)
        elif part.first < self._legacy[0].shape[0]:
            rows = slice(part.first, part.first + part.count)
            stored = (self._legacy[0][rows], self._legacy[1][rows])
        elif graph.links_file:
            raise MuveraError(
                f"{part.file.name}: a graph file without vectors, and no codes file named for it"
            )
        graph._quantize(None, stored)
        graph.release_pages()  # the neighbour lists' pages too
        return graph

    def _save_codes(self, part: Part, graph: QuantizedGraph, kept: tuple[Any, Any] | None) -> None:
        """Write ``part``'s codes file from ``graph`` (``kept``: codes of its first rows made
        already) and point the graph at the file's map."""
        name = codes_name(part.file.name)
        write_codes(part.file.parent / name, graph, kept)
        part.codes = name
        graph._quantize(None, read_codes(part.file.parent / name, len(graph), self.dimension))

    def _persist_codes(self) -> None:
        """A codes file for each graph file searched by the walk that has none yet (a graph
        quantized at open); the graph then searches the mapped file instead of its own copy
        (memory of the page cache, not of the writer)."""
        for part in self._parts:
            graph = part.graph
            if graph is not None and part.codes is None:
                self._save_codes(part, graph, (graph.codes, graph.meta))

    def _load_index(self, part: Part | None, capacity: int, scratch: Path | None = None) -> Any:
        """An ``hnswlib.Index`` of ``part``'s graph file (a links file written back with its
        codes' vectors into ``scratch``, :func:`.hnsw_links.load_hnswlib`) with room for
        ``capacity`` rows, or a new empty one."""
        codes = None if part is None or part.codes is None else part.file.parent / part.codes
        return load_hnswlib(
            None if part is None else part.file, self.dimension, capacity,
            {"M": self.M, "ef_construction": self.ef_construction, "ef": self.ef},
            codes, scratch,
        )  # fmt: skip

    def _part_index(self, part: Part) -> Any:
        """``part``'s hnswlib index (loaded on first use, its dead rows marked)."""
        if part.index is None:
            part.index = self._load_index(part, part.count)
            if part.index.get_current_count() != part.count:
                rows, part.index = part.index.get_current_count(), None
                raise MuveraError(
                    f"{part.file.name}: the graph has {rows} rows, the manifest says {part.count}"
                )
            labels = np.asarray(part.index.get_ids_list(), np.int64)
            inside = (labels >= 0) & (labels < self._live.size)
            dead = labels[~inside | ~self._live[np.where(inside, labels, 0)]]
            mark_deleted(part.index, dead)
        return part.index

    @property
    def hnswlib_index(self) -> Any:
        """The main graph's ``hnswlib.Index`` (loaded from its file on first use; a new
        empty one before the first commit)."""
        if not self._parts:
            if self._empty is None:
                self._empty = self._load_index(None, 16)
            return self._empty
        return self._part_index(self._parts[0])

    _empty: Any = None

    @property
    def _graph(self) -> QuantizedGraph | None:
        """The main graph's int8 view (None when searched by hnswlib)."""
        return self._parts[0].graph if self._parts else None

    @property
    def graphs(self) -> list[QuantizedGraph]:
        """The int8 views of the graph files, main first (empty when searched by hnswlib)."""
        return [] if self._fallback else [p.graph for p in self._parts if p.graph is not None]

    @property
    def hnswlib_loaded(self) -> bool:
        """Whether hnswlib holds a graph file in memory (to search it, or while folding)."""
        return any(part.index is not None for part in self._parts)

    @property
    def segments(self) -> int:
        """Graph files committed after the main one (see :mod:`.hnsw_parts`)."""
        return max(len(self._parts) - 1, 0)

    @property
    def code_rows(self) -> int:
        """Graph rows whose int8 codes are in codes files (mapped when the index opens)."""
        return sum(part.count for part in self._parts if part.codes is not None)

    @property
    def quantized(self) -> bool:
        """Whether searches of the committed rows run on the int8 codes (see the class
        docstring)."""
        return bool(self._parts) and not self._fallback

    def __len__(self) -> int:
        return self.count - self.deleted

    def set_ef(self, ef: Any) -> None:
        """Search breadth from now on (raised to the neighbours asked for when smaller)."""
        if isinstance(ef, bool) or not isinstance(ef, (int, np.integer)) or ef < 1:
            raise MuveraError(f"ef must be a positive int, got {ef!r}")
        self.ef = int(ef)
        for part in self._parts:
            if part.index is not None:
                part.index.set_ef(self.ef)

    def apply_overrides(self, overrides: dict[str, Any]) -> None:
        """``ef`` (kept if this writer commits) and ``num_threads`` (this session) may
        change when opening."""
        if not set(overrides) <= {"ef", "num_threads"}:
            raise MuveraError(
                f"store_options {sorted(overrides)} cannot be changed when opening an "
                "index with the hnswlib store (hnswlib takes 'ef' and 'num_threads')"
            )
        if "ef" in overrides:
            self.set_ef(overrides["ef"])
        threads = overrides.get("num_threads", self.num_threads)
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
            raise MuveraError(f"num_threads must be an int, got {threads!r}")
        self.num_threads = int(threads)

    def params(self) -> dict[str, Any]:
        return {
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef": self.ef,
            "quantization": self.quantization,
            "graph_vectors": self.graph_vectors,
        }

    def _add_fdes(self, labels: Labels, fdes: npt.NDArray[np.float32]) -> None:
        """Held until the commit, which writes them as a segment (or folds them in): in
        memory up to :data:`SPILL_BYTES` of them, the rest in the writer's scratch file."""
        fdes = np.ascontiguousarray(fdes, dtype=np.float32)
        if self._held + fdes.nbytes <= SPILL_BYTES:
            kept: Any = fdes.copy()
            self._held += fdes.nbytes
        else:
            kept = self._spill(fdes)
        self._pending.append((np.array(labels, np.int64), kept))
        self.count += labels.size

    def _spill(self, fdes: npt.NDArray[np.float32]) -> Spilled:
        if self._scratch is None:  # open across adds, closed by the commit that inserts
            self._scratch = Scratch(self.directory)
        return self._scratch.append(fdes)

    def _delete_fdes(self, labels: Labels) -> None:
        """Masked in the graphs read (no graph file changes: the live labels say it)."""
        labels = np.asarray(labels, np.int64)
        for part in self._parts:
            part.mark_labels(labels)
        self.deleted += labels.size
        pending = sum(int(np.isin(p[0], labels).sum()) for p in self._pending)
        self._unmarked += labels.size - pending

    def _candidates(
        self,
        queries: npt.NDArray[np.float32],
        k: int,
        exact: bool = True,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[Labels, npt.NDArray[np.float32]]:
        """Top ``k`` labels per query over the main graph, its segments and the rows not
        committed yet, padded with -1 / -inf. Scores are FDE inner products: on the int8
        codes when searching them and ``exact`` is False, else float32. ``allowed`` (a
        mask over labels): the walk goes through the others but never returns them, as
        through deleted rows."""
        n_q = queries.shape[0]
        take = min(k, len(self))
        if take == 0 or n_q == 0:
            return pad_topk(np.zeros((n_q, 0), np.float32), np.zeros(0, np.int64), k)
        results = [self._search_part(part, queries, take, exact, allowed) for part in self._parts]
        if self._pending:
            results.append(scan_rows(self._pending, queries, take, self._live, allowed))
        labels, scores = merge_top(results, take)
        out = pad_topk(np.zeros((n_q, 0), np.float32), np.zeros(0, np.int64), k)
        out[0][:, :take], out[1][:, :take] = labels, scores
        return out

    def _search_part(
        self,
        part: Part,
        queries: npt.NDArray[np.float32],
        take: int,
        exact: bool,
        allowed: npt.NDArray[np.bool_] | None,
    ) -> tuple[Labels, npt.NDArray[np.float32]]:
        graph, kernel = part.graph, native.load()
        if graph is None or self._fallback or kernel is None:
            threads = 1 if queries.shape[0] == 1 else self.num_threads
            return search_hnswlib(self._part_index(part), queries, take, self.ef, threads, allowed)
        rows, scores = graph.search(
            kernel,
            queries,
            take,
            min(max(self.ef, take), max(take, len(graph))),  # no wider than the graph
            self._walk_threads(queries.shape[0]),
            None if allowed is None else graph.excluded(allowed),
        )
        if exact:
            scores = rescore(graph, queries, rows, scores)
        labels = np.where(rows >= 0, graph.labels[np.maximum(rows, 0)], -1)
        return labels, scores

    def _walk_threads(self, n_queries: int) -> int:
        """Threads of the int8 walk: a batch's queries share ``num_threads`` (< 1: every
        CPU); one query walks on the calling thread, with a helper thread scoring half of
        each step's neighbours only if ``num_threads`` >= 2 (it spins during the walk:
        ``benchmarks/bench_tail.py``)."""
        if n_queries == 1:
            return max(self.num_threads, 1)
        return native.default_threads() if self.num_threads < 1 else self.num_threads

    def _save_fdes(self, directory: Path, generation: int) -> dict[str, Any]:
        """Write the rows added since the last commit as a new segment, merge the segments
        and them into one segment, or fold everything into a new main graph
        (:func:`.hnsw_parts.plan_commit`); deletes alone write no graph file."""
        new = sum(p[0].size for p in self._pending)
        moved = any(part.file.parent != directory for part in self._parts)
        if new or moved:
            rows = [part.count for part in self._parts]
            keep = plan_keep(rows, new, seal_rows(self.dimension))
            self._merge(directory, generation, 0 if moved else keep)
        self._persist_codes()
        entry = {**self.params(), "count": self._parts[0].count if self._parts else 0,
                 "deleted": self.deleted}  # fmt: skip
        if self._parts:
            entry.update(file=self._parts[0].file.name, capacity=self._parts[0].count)
            if self._parts[0].codes is not None:
                entry["codes_file"] = self._parts[0].codes
        if len(self._parts) > 1:
            entry["segments"] = [
                {"file": p.file.name, "count": p.count}
                | ({} if p.codes is None else {"codes_file": p.codes})
                for p in self._parts[1:]
            ]
        if self._unmarked:
            entry["unmarked"] = self._unmarked
        return entry

    def _merge(self, directory: Path, generation: int, keep: int) -> None:
        """:func:`.hnsw_merge.merge_graphs` of this store."""
        merge_graphs(self, directory, generation, keep)
