"""The hnswlib store (the default): an HNSW graph over the FDEs, built and saved by hnswlib,
searched over int8 codes by the compiled graph walk (:mod:`muvera.stores.hnsw_graph`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .. import native
from ..errors import MuveraError
from ..files import AppendOnlyFile
from .base import Labels
from .hnsw_graph import QuantizedGraph
from .local import LocalStore

__all__ = ["FDE_CODES", "FDE_SCALES", "HnswStore"]

FDE_CODES = "fde-codes.bin"  # int8 (rows, d): the walk's codes, in hnswlib's row order
FDE_SCALES = "fde-scales.bin"  # float32 (rows, 2): their scales


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
    persist it). Capacity doubles as the index grows; deletes use ``mark_deleted``.

    ``quantization="int8"`` (the default): hnswlib builds and saves the graph, and searches
    walk that same graph in the compiled kernel over an int8 copy of the FDEs (one scale per
    row, made from the saved file's new rows at each commit and appended to
    ``fde-codes.bin`` / ``fde-scales.bin``, which a reader maps instead of quantizing every
    row again; an index without them quantizes at open and writes them at its next
    commit that changes the graph), which
    reads a quarter of the bytes per visited node (``benchmarks/bench_retrieval.py``
    measures both). The candidates' scores are then inner products on the int8 codes; FDE-only
    searches (``exact=True``) re-score the returned rows with the float32 FDEs. hnswlib
    itself is loaded only when the index changes. ``quantization="none"``, a build without
    the compiled kernel, FDEs wider than 65,536 dims, or an hnswlib file in an unknown layout
    search with hnswlib.
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
        self.M = int(entry.get("M", M))
        self.ef_construction = int(entry.get("ef_construction", ef_construction))
        self.ef = int(entry.get("ef", ef))
        self.num_threads = num_threads
        self.quantization = str(entry.get("quantization", quantization))
        for name, value in (
            ("M", self.M),
            ("ef_construction", self.ef_construction),
            ("ef", self.ef),
        ):
            if value < 1:
                raise MuveraError(f"hnswlib {name} must be >= 1, got {value}")
        if self.quantization not in self.QUANTIZATIONS:
            raise MuveraError(
                f"hnswlib quantization must be one of {list(self.QUANTIZATIONS)}, "
                f"got {self.quantization!r}"
            )
        self.count = _count(entry, "count")
        self.deleted = _count(entry, "deleted")
        self._capacity = max(16, _count(entry, "capacity", 16))
        if self.deleted > self.count:
            raise MuveraError("hnswlib store: more deleted rows than rows")
        self._codes_rows, self._fde_codes, self._fde_scales = self._stored_codes(
            directory, entry.get("codes")
        )
        self._entry = dict(entry)
        self._file: Path | None = directory / entry["file"] if entry.get("file") else None
        self._index: Any = None  # hnswlib.Index, loaded when first needed
        self._graph: QuantizedGraph | None = None
        self._dirty = False  # hnswlib holds changes that _graph does not have yet
        if self._file is not None:
            self._graph = self._read_graph(self._file, None)
        if self._graph is None:
            self._load_hnswlib()

    def _stored_codes(
        self, directory: Path, section: Any
    ) -> tuple[int, AppendOnlyFile, AppendOnlyFile]:
        """The persisted codes of the first ``rows`` graph rows (none without a section)."""
        if section is None:
            return (
                0,
                AppendOnlyFile(directory / FDE_CODES, 0),
                AppendOnlyFile(directory / FDE_SCALES, 0),
            )
        if (
            not isinstance(section, dict) or section.get("file") != FDE_CODES
            or section.get("scales") != FDE_SCALES
        ):  # fmt: skip
            raise MuveraError("hnswlib store: the FDE codes section is malformed")
        rows = _count(section, "rows")
        if rows > self.count:
            raise MuveraError(
                f"hnswlib store: FDE codes of {rows} rows, the graph has {self.count}"
            )
        try:
            codes = AppendOnlyFile(directory / FDE_CODES, rows * self.dimension, map_now=True)
            scales = AppendOnlyFile(directory / FDE_SCALES, rows * 8, map_now=True)
        except OSError as exc:
            raise MuveraError(f"cannot read the FDE codes: {exc}") from None
        return rows, codes, scales

    def _read_graph(self, path: Path, previous: QuantizedGraph | None) -> QuantizedGraph | None:
        if self.quantization != "int8" or native.load() is None:
            return None
        stored = None
        if previous is None and self._codes_rows:
            rows = self._codes_rows
            codes = self._fde_codes.view(np.int8)[: rows * self.dimension]
            scales = self._fde_scales.view("<f4")[: rows * 2].reshape(rows, 2)
            if not np.isfinite(scales).all():
                raise MuveraError(f"{FDE_SCALES}: the scales are not all finite")
            stored = (codes.reshape(rows, self.dimension), scales)
        return QuantizedGraph.read(path, self.dimension, previous, stored)

    def _persist_codes(self, graph: QuantizedGraph) -> None:
        """Append the codes and scales of the graph rows not persisted yet."""
        rows, n = self._codes_rows, int(graph.codes.shape[0])
        if n <= rows:
            return
        for target, data in (
            (self._fde_codes, np.ascontiguousarray(graph.codes[rows:n]).tobytes()),
            (self._fde_scales, np.ascontiguousarray(graph.meta[rows:n], "<f4").tobytes()),
        ):
            target.committed = target.append(data) + len(data)
        self._codes_rows = n

    def _load_hnswlib(self) -> Any:
        import hnswlib

        index = hnswlib.Index(space="ip", dim=self.dimension)
        if self._file is not None:
            QuantizedGraph.check(self._file, self.dimension)  # before hnswlib trusts it
            # a manifest's capacity is only a hint: never more than twice what is stored
            capacity = min(self._capacity, 2 * max(self.count, 16))
            try:
                index.load_index(str(self._file), max_elements=capacity)
            except (RuntimeError, ValueError, MemoryError) as exc:
                raise MuveraError(f"{self._file.name}: hnswlib cannot load it ({exc})") from None
        else:
            index.init_index(max_elements=16, ef_construction=self.ef_construction, M=self.M)
        index.set_ef(self.ef)
        self._index = index
        return index

    @property
    def hnswlib_index(self) -> Any:
        """The ``hnswlib.Index`` (loaded from the saved file on first use)."""
        return self._index if self._index is not None else self._load_hnswlib()

    @property
    def code_rows(self) -> int:
        """Graph rows whose int8 codes are persisted (mapped when the index opens)."""
        return self._codes_rows

    @property
    def quantized(self) -> bool:
        """Whether searches run on the int8 codes (see the class docstring)."""
        return self._graph is not None and not self._dirty

    def __len__(self) -> int:
        return self.count - self.deleted

    def set_ef(self, ef: Any) -> None:
        """Search breadth from now on (raised to the neighbours asked for when smaller)."""
        if isinstance(ef, bool) or not isinstance(ef, (int, np.integer)) or ef < 1:
            raise MuveraError(f"ef must be a positive int, got {ef!r}")
        self.ef = int(ef)
        if self._index is not None:
            self._index.set_ef(self.ef)

    def apply_overrides(self, overrides: dict[str, Any]) -> None:
        """``{"ef": N}`` may change when opening (kept if this writer commits)."""
        if overrides and set(overrides) != {"ef"}:
            raise MuveraError(
                f"store_options {sorted(overrides)} cannot be changed when opening an "
                "index with the hnswlib store (hnswlib takes 'ef')"
            )
        if overrides:
            self.set_ef(overrides["ef"])

    def params(self) -> dict[str, Any]:
        return {
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef": self.ef,
            "quantization": self.quantization,
        }

    def _add_fdes(self, labels: Labels, fdes: npt.NDArray[np.float32]) -> None:
        index = self.hnswlib_index
        self._dirty = True
        needed = index.get_current_count() + labels.size
        capacity = index.get_max_elements()
        if needed > capacity:
            index.resize_index(max(needed, 2 * capacity))
        index.add_items(
            np.ascontiguousarray(fdes, dtype=np.float32), labels, num_threads=self.num_threads
        )
        self.count += labels.size

    def _delete_fdes(self, labels: Labels) -> None:
        index = self.hnswlib_index
        self._dirty = True
        for label in labels.tolist():
            index.mark_deleted(int(label))
        self.deleted += labels.size

    def _candidates(
        self,
        queries: npt.NDArray[np.float32],
        k: int,
        exact: bool = True,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[Labels, npt.NDArray[np.float32]]:
        """Top ``k`` labels per query, padded with -1 / -inf. Scores are FDE inner products:
        on the int8 codes when searching them and ``exact`` is False, else float32.
        ``allowed`` (a mask over labels): the walk goes through the others but never
        returns them, as through deleted rows."""
        n_q = queries.shape[0]
        out_labels = np.full((n_q, k), -1, dtype=np.int64)
        out_scores = np.full((n_q, k), -np.inf, dtype=np.float32)
        take = min(k, len(self))
        if take == 0 or n_q == 0:
            return out_labels, out_scores
        graph, kernel = self._graph, native.load()
        if graph is not None and not self._dirty and kernel is not None:
            rows, scores = graph.search(
                kernel,
                queries,
                take,
                min(max(self.ef, take), max(take, len(graph))),  # no wider than the graph
                # one query: a helper thread scores half of each step's neighbours
                native.default_threads() if self.num_threads < 1 else self.num_threads,
                None if allowed is None else graph.excluded(allowed),
            )
            if exact:
                scores = self._rescore(graph, queries, rows, scores)
            found = rows >= 0
            out_labels[:, :take] = np.where(found, graph.labels[np.maximum(rows, 0)], -1)
            out_scores[:, :take] = scores
            return out_labels, out_scores
        threads = 1 if n_q == 1 else self.num_threads
        return self._search_hnswlib(queries, take, out_labels, out_scores, threads, allowed)

    @staticmethod
    def _rescore(
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

    def _search_hnswlib(
        self,
        queries: npt.NDArray[np.float32],
        take: int,
        out_labels: Labels,
        out_scores: npt.NDArray[np.float32],
        threads: int,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[Labels, npt.NDArray[np.float32]]:
        index = self.hnswlib_index
        allow = None
        if allowed is not None:
            n_allowed = allowed.size
            allow = lambda label: label < n_allowed and bool(allowed[label])  # noqa: E731
        index.set_ef(min(max(self.ef, take), max(take, self.count)))
        try:
            labels, distances = index.knn_query(queries, k=take, num_threads=threads, filter=allow)
            out_labels[:, :take] = labels
            out_scores[:, :take] = 1.0 - distances  # hnswlib's "ip" distance is 1 - <q, x>
        except RuntimeError:
            # Too few reachable live points for `take` (many deletions): ask one query at a
            # time for as many as the graph yields.
            for i in range(queries.shape[0]):
                for want in range(take, 0, -1):
                    try:
                        labels, distances = index.knn_query(
                            queries[i : i + 1], k=want, filter=allow
                        )
                    except RuntimeError:
                        continue
                    out_labels[i, :want] = labels[0]
                    out_scores[i, :want] = 1.0 - distances[0]
                    break
        finally:
            index.set_ef(self.ef)
        return out_labels, out_scores

    def _save_fdes(self, directory: Path, generation: int) -> dict[str, Any]:
        if self._index is None and self._file is not None and self._file.parent == directory:
            # never loaded, so unchanged since it was read: the saved file stays as it is
            self._entry = {**self._entry, **self.params()}
            return self._with_codes()
        name = f"hnsw-{generation:06d}.bin"
        index = self.hnswlib_index
        index.save_index(str(directory / name))
        with (directory / name).open("rb+") as fh:
            os.fsync(fh.fileno())
        self._file = directory / name
        self._capacity = index.get_max_elements()
        self._entry = {
            **self.params(),
            "file": name,
            "capacity": self._capacity,
            "count": self.count,
            "deleted": self.deleted,
        }
        if self._dirty or self._graph is None:
            self._graph = self._read_graph(self._file, self._graph)
        self._dirty = False
        return self._with_codes()

    def _with_codes(self) -> dict[str, Any]:
        """The entry, after the graph's codes not persisted yet are appended."""
        if self._graph is not None:
            self._persist_codes(self._graph)
        if self._codes_rows:
            self._entry["codes"] = {"file": FDE_CODES, "scales": FDE_SCALES,
                                    "rows": self._codes_rows}  # fmt: skip
        return dict(self._entry)
