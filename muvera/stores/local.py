"""Local stores: FDEs in an index structure in the index folder (exact or hnswlib), token
vectors in one append-only file beside them, re-ranked by :mod:`muvera.scoring`.

:class:`LocalStore` implements :class:`~muvera.stores.base.Store` once for both; a subclass
says only how it keeps FDEs (``_add_fdes``, ``_delete_fdes``, ``_candidates``,
``_save_fdes``). Token vectors: ``tokens.bin`` (float16 or float32 rows of the token
dimension, or int8/int4/residual4 codes with a scale per row as :mod:`muvera.token_codes`
stores them; documents one after another); each label's span (offset, length) lives in the
generation's state file. Compaction writes ``tokens-<generation>.bin`` without dead
documents.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ..batch import TokenBatch
from ..cells import CELL_COUNTS
from ..errors import MuveraError
from ..files import AppendOnlyFile
from ..scoring import maxsim_pairs, maxsim_spans
from ..token_codes import CODE_KINDS, RESIDUAL_KINDS, QuantizedTokens, encode_rows, row_bytes
from . import cell_file
from .base import Hits, Labels, Payload, StoreRecord
from .cell_file import FDE_PART, SCAN_PART, SCAN_TOKENS, WIDE, TokenCells
from .token_section import check_float16_range, read_centre, read_residual

__all__ = ["TOKEN_DTYPES", "LocalStore", "check_float16_range"]

# token formats -> numpy type of the stored values ("int4" packs two codes in each byte)
TOKEN_DTYPES = {
    "float16": np.float16, "float32": np.float32, "int8": np.int8, "int4": np.int8,
    "residual4": np.int8,  # int4 codes of each token's difference from its cell's centroid
    "residual2": np.int8, "residual4lm": np.int8,  # 2-bit / Lloyd-Max 4-bit differences
}  # fmt: skip
COMPACT_AT = 0.5  # compact the token file once half of its vectors are dead
EXHAUSTIVE_SIMS = 1 << 22  # scores per block of an exact search over every document
# A filter that lets at most this many times `candidates` documents through is answered by
# exact MaxSim over them (no more work than re-ranking that many candidates, and exact).
FILTER_EXACT_FACTOR = 4
_ENCODE_BLOCK = 1 << 15  # token rows quantized at a time (16 MiB of float32 at d = 128)


def _ms_since(start: float) -> float:
    return 1000 * (time.perf_counter() - start)


class LocalStore:
    """Token file + spans + exact re-rank shared by the exact and hnswlib stores."""

    kind: ClassVar[str] = ""
    filters_payloads: ClassVar[bool] = False  # the index gives a mask of allowed labels

    def __init__(
        self,
        directory: Path,
        fde_dimension: int,
        token_dimension: int,
        tokens: dict[str, Any],
        arrays: dict[str, npt.NDArray[Any]],
    ) -> None:
        self.directory = directory
        self.fde_dimension = fde_dimension
        self.token_dimension = token_dimension
        self.options: dict[str, Any] = {}
        dtype = tokens.get("dtype")
        if dtype not in TOKEN_DTYPES:
            raise MuveraError(f"token dtype must be one of {sorted(TOKEN_DTYPES)}, got {dtype!r}")
        self.token_dtype = TOKEN_DTYPES[dtype]
        self.token_format = str(dtype)
        self.row_bytes = (
            row_bytes(dtype, token_dimension) if dtype in CODE_KINDS
            else np.dtype(self.token_dtype).itemsize * token_dimension
        )  # fmt: skip
        self._token_section = dict(tokens)
        self._tokens = AppendOnlyFile(
            directory / tokens["file"], int(tokens["bytes"]), map_now=True
        )
        self.offsets = np.asarray(arrays.get("offsets", np.zeros(0)), dtype=np.int64)
        self.lengths = np.asarray(arrays.get("lengths", np.zeros(0)), dtype=np.int64)
        self.centre = read_centre(
            tokens.get("centre"), self.token_format, token_dimension, self._tokens.committed
        )
        self._check_spans(arrays.get("alive"))
        self.cells = (
            None if "cells" not in tokens
            else TokenCells(directory, tokens["cells"], self._tokens.committed // self.row_bytes,
                            token_dimension)
        )  # fmt: skip
        self.residual_from = read_residual(
            tokens.get("residual_from"), self.token_format, self.cells,
            self._tokens.committed // self.row_bytes, self.centre,
        )  # fmt: skip
        self._bases: npt.NDArray[np.float32] | None = None

    def _check_spans(self, alive: Any) -> None:
        """Every live document's token span inside the committed token file (read from
        disk, so checked before the compiled MaxSim reads it). O(documents)."""
        name = self._tokens.path.name
        if self._tokens.committed % self.row_bytes:
            raise MuveraError(f"{name}: {self._tokens.committed} bytes is not whole token rows")
        rows = self._tokens.committed // self.row_bytes
        live = np.ones(self.offsets.shape, bool) if alive is None else np.asarray(alive, bool)
        if self.offsets.ndim != 1 or not self.offsets.shape == self.lengths.shape == live.shape:
            raise MuveraError("the state file's token spans do not match its documents")
        if (self.lengths < 0).any() or (self.offsets < 0).any():
            raise MuveraError("the state file has negative token spans")
        ends = self.offsets[live] + self.lengths[live]
        if ends.size and int(ends.max()) > rows:
            raise MuveraError(f"the state file's token spans run past the end of {name}")
        self._live = live.copy()  # kept up to date by add / delete: the cells' postings

    # -- construction (shared by the subclasses) -------------------------------------------
    @classmethod
    def create(
        cls, directory: Path, encoder: Any, options: dict[str, Any], token_dtype: str
    ) -> LocalStore:
        options = dict(options)
        cells = options.pop("token_cells", True)
        if not isinstance(cells, bool) and (
            not isinstance(cells, int | np.integer) or cells not in CELL_COUNTS
        ):
            raise MuveraError(
                "store option token_cells must be True, False or a cell count "
                f"({', '.join(map(str, CELL_COUNTS))}), got {cells!r}"
            )
        tokens: dict[str, Any] = {"file": "tokens.bin", "dtype": token_dtype, "bytes": 0}
        if token_dtype in RESIDUAL_KINDS and not cells:
            raise MuveraError(
                f'token dtype "{token_dtype}" needs the token cells (token_cells=True)'
            )
        if cells:
            default = cells is True or cells == cell_file.DEFAULT_COUNT
            tokens["cells"] = {} if default else {"count": int(cells)}
        return cls._build(directory, encoder.output_dimension, encoder.config.dimension,
                          tokens, {}, None, options)  # fmt: skip

    @classmethod
    def open(
        cls,
        directory: Path,
        manifest: dict[str, Any],
        arrays: dict[str, npt.NDArray[Any]],
        overrides: dict[str, Any],
    ) -> LocalStore:
        store = manifest["store"]
        self = cls._build(
            directory, int(manifest["fde_dimension"]), int(manifest["token_dimension"]),
            manifest["tokens"], arrays, store.get("entry"), dict(store.get("options") or {}),
        )  # fmt: skip
        self.apply_overrides(overrides)
        return self

    @classmethod
    def _build(
        cls,
        directory: Path,
        fde_dimension: int,
        token_dimension: int,
        tokens: dict[str, Any],
        arrays: dict[str, npt.NDArray[Any]],
        entry: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> LocalStore:
        try:
            store = cls(directory, fde_dimension, token_dimension, tokens, arrays, entry, **options)  # type: ignore[call-arg]
        except TypeError as exc:
            raise MuveraError(f"bad options for the {cls.kind} store: {exc}") from None
        store.options = dict(options)
        return store

    @staticmethod
    def session_options(options: dict[str, Any]) -> dict[str, Any]:
        """Options given to :meth:`create` that are not recorded but must be passed again
        to :meth:`open` in this session (none for local stores)."""
        del options
        return {}

    def apply_overrides(self, overrides: dict[str, Any]) -> None:
        """Options changed when opening (none by default)."""
        if overrides:
            raise MuveraError(
                f"store_options {sorted(overrides)} cannot be changed when opening an index "
                f"with the {self.kind} store"
            )

    # -- what subclasses provide ----------------------------------------------------------
    def _add_fdes(self, labels: Labels, fdes: npt.NDArray[np.float32]) -> None:
        raise NotImplementedError

    def _delete_fdes(self, labels: Labels) -> None:
        raise NotImplementedError

    def _candidates(
        self,
        q_fdes: npt.NDArray[np.float32],
        n: int,
        exact: bool,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[Labels, npt.NDArray[np.float32]]:
        """Top ``n`` labels by FDE score (only labels ``allowed`` permits, when given)."""
        raise NotImplementedError

    def _save_fdes(self, directory: Path, generation: int) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def uses_cells(self) -> bool:
        """Whether searches add token-cell candidates (cells fitted)."""
        return self.cells is not None and self.cells.fitted

    @property
    def wide(self) -> bool:
        """Whether the cells run their wide mode (FDE pool + probed cells) rather than
        scoring every document: more than ``SCAN_TOKENS`` token rows in the file (dead ones
        too, fewer than half of them: O(1), and what a scan costs)."""
        return self._tokens.committed // self.row_bytes > SCAN_TOKENS

    # -- the Store protocol ---------------------------------------------------------------
    def check_documents(self, docs: TokenBatch) -> None:
        if self.token_dtype == np.float16:
            check_float16_range(docs)
        elif (  # quantized: differences from the centre must stay finite
            self.token_format in CODE_KINDS
            and docs.tokens.size
            and max(float(docs.tokens.max()), -float(docs.tokens.min())) > 1e37
        ):
            raise MuveraError("add: token values beyond +-1e37 cannot be quantized")

    def add(
        self,
        labels: Labels,
        fdes: npt.NDArray[np.float32],
        docs: TokenBatch,
        ids: list[Any],
        payloads: list[Payload],
    ) -> None:
        del ids, payloads  # kept by the index
        first = self._tokens.committed // self.row_bytes
        tokens = np.asarray(docs.tokens, np.float32)
        residual = self.token_format in RESIDUAL_KINDS and self.cells is not None
        if residual and self.cells is not None:  # cells first: a residual row's base is its cell
            self.cells.add(tokens, first, self._float_rows)
            if self.cells.fitted and self.residual_from is None:
                self.residual_from = first  # rows before it keep the centre
        values = self._encode(tokens, first)
        start = self._tokens.append(values.tobytes())
        self._tokens.committed = start + values.nbytes
        if self.cells is not None and not residual:
            self.cells.add(tokens, first, self._float_rows)
        self._add_fdes(labels, fdes)
        self.offsets = np.concatenate([self.offsets, first + docs.offsets[:-1]])
        self.lengths = np.concatenate([self.lengths, docs.lengths])
        self._live = np.concatenate([self._live, np.ones(docs.lengths.shape, bool)])

    def _encode(self, tokens: npt.NDArray[np.float32], first: int) -> npt.NDArray[Any]:
        """Rows ``first ..`` as stored: float values, or the codes of each token's difference
        from its base (the centre; for residual rows, its cell's centroid)."""
        if self.token_format not in CODE_KINDS:
            return np.ascontiguousarray(tokens, dtype=self.token_dtype)
        if self.centre is None:  # the first batch's mean token (see token_codes)
            self.centre = tokens.mean(axis=0, dtype=np.float64).astype(np.float32)
        fitted = self.cells.cells if self.cells is not None else None
        cells = None
        if self.residual_from is not None and self.cells is not None and fitted is not None:
            cells = self.cells.code_rows()[first : first + tokens.shape[0]]
        n, d = tokens.shape
        out = np.empty((n, row_bytes(self.token_format, d)), np.uint8)
        # in blocks: the differences stay small enough to be reused, not mapped anew
        for start in range(0, n, _ENCODE_BLOCK):
            stop = min(n, start + _ENCODE_BLOCK)
            if cells is not None and fitted is not None:  # the gathered centroids' block
                # becomes the differences: one temporary a block, not two
                base = fitted.fine[cells[start:stop]]
                diff = np.subtract(tokens[start:stop], base, out=base)
            else:
                diff = np.subtract(tokens[start:stop], self.centre, dtype=np.float32)
            out[start:stop] = encode_rows(diff, self.token_format)
        return out

    def delete(self, labels: Labels) -> None:
        self._delete_fdes(labels)
        self._live[np.asarray(labels, np.int64)] = False

    def update_payloads(self, labels: list[int], payloads: list[Payload]) -> None:
        """Nothing: payloads live in the index's records."""

    def token_matrix(self) -> npt.NDArray[Any] | QuantizedTokens:
        """Every committed token row, ``(rows, d)`` float16/float32 or quantized,
        memory-mapped."""
        if self.token_format in CODE_KINDS:
            return QuantizedTokens(
                self._raw_rows(), self.token_format, self.token_dimension, self.centre,
                self._residual(),
            )  # fmt: skip
        return self._tokens.view(self.token_dtype).reshape(-1, self.token_dimension)

    def _residual(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint16], int] | None:
        """(bases = centroids - centre, the cells' labels, first residual row), or None."""
        if self.residual_from is None or self.cells is None or self.cells.cells is None:
            return None
        if self._bases is None and self.centre is not None:
            self._bases = np.ascontiguousarray(self.cells.cells.fine - self.centre, np.float32)
        if self._bases is None:
            return None
        return self._bases, self.cells.code_rows(), self.residual_from

    def _float_rows(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        """Token rows ``start .. stop`` as float32 (decoded where quantized)."""
        return np.asarray(self.token_matrix()[start:stop], dtype=np.float32)

    def _raw_rows(self) -> npt.NDArray[np.uint8]:
        """The token file's committed rows as bytes, ``(rows, row_bytes)`` uint8."""
        return self._tokens.view(np.uint8).reshape(-1, self.row_bytes)

    def tokens(self, label: int) -> npt.NDArray[np.float32]:
        off, n = int(self.offsets[label]), int(self.lengths[label])
        return np.asarray(self.token_matrix()[off : off + n], dtype=np.float32)

    def search(
        self,
        q_fdes: npt.NDArray[np.float32] | None,
        queries: TokenBatch,
        k: int,
        candidates: int | None,
        *,
        rerank: bool,
        alive: npt.NDArray[np.bool_],
        query_filter: Any = None,
        restricted: bool = False,
    ) -> Hits:
        if query_filter is not None:
            raise MuveraError(f"the {self.kind} store takes payload filters as a label mask")
        allowed = alive if restricted else None
        t0 = time.perf_counter()
        if (candidates is None or q_fdes is None) or (
            restricted and rerank and int(alive.sum()) <= FILTER_EXACT_FACTOR * candidates
        ):  # everything, or the few documents a filter lets through: all scored exactly
            return self._exhaustive(queries, k, alive).timed(exact_ms=_ms_since(t0))
        cells = rerank and self.uses_cells
        wide = self.wide
        keep = -(-candidates // (FDE_PART if wide else SCAN_PART))  # the FDE's own share
        n_fde = (WIDE * candidates if wide else keep) if cells else candidates
        vectors = [np.asarray(queries.item(i), np.float32) for i in range(len(queries))]
        tables = self.cells.start_tables(vectors) if cells and self.cells is not None else None
        labels, scores = self._candidates(q_fdes, n_fde if rerank else k, not rerank, allowed)
        # labels come from files (graph rows, store state): only live ones of this index
        hits = Hits(labels, scores).live(alive)
        if cells and self.cells is not None:
            # label order is token-file order (adds append, compaction keeps the order), so
            # the scan reads the code file front to back
            pools = [row[row >= 0] for row in hits.labels] if wide else [np.flatnonzero(alive)]
            lists = (
                self.cells.postings(self.offsets, self.lengths, self._live)
                if wide and cell_file.PROBE_DOCS else None
            )  # fmt: skip
            merged = self.cells.candidates(
                vectors, hits.labels, keep, pools,
                self.offsets, self.lengths, candidates,
                None if lists is None else (lists, alive), tables,
            )  # fmt: skip
            hits = Hits(merged, np.zeros(merged.shape, np.float32))
        t1 = time.perf_counter()
        if not rerank:
            return Hits(hits.labels, hits.scores).timed(candidates_ms=_ms_since(t0))
        return self._rerank(queries, hits.labels, k).timed(
            candidates_ms=1000 * (t1 - t0), rerank_ms=_ms_since(t1)
        )

    def _rerank(self, queries: TokenBatch, labels: Labels, k: int) -> Hits:
        """Exact MaxSim of each query against its candidates (-1 = none), best ``k`` kept
        (ties keep the token-file order). All (query, candidate) pairs go to the kernel in one
        call, read in place from the memory map in file order, shared between its threads."""
        n_q, width = labels.shape
        hits = Hits.empty(n_q, k)
        valid = labels >= 0
        if not valid.any():
            return hits
        file_order = np.where(valid, self.offsets[np.maximum(labels, 0)], np.iinfo(np.int64).max)
        order = np.argsort(file_order, axis=1, kind="stable")  # candidates first, file order
        ordered = np.take_along_axis(labels, order, axis=1)
        found = np.take_along_axis(valid, order, axis=1)
        cand = ordered[found]
        scores = np.full((n_q, width), -np.inf, dtype=np.float32)
        scores[found] = maxsim_pairs(
            self.token_matrix(), self.offsets[cand], self.lengths[cand],
            np.nonzero(found)[0], queries.tokens, queries.offsets, checked=True,
        )  # fmt: skip
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        take = top.shape[1]
        hits.labels[:, :take] = np.where(
            np.take_along_axis(found, top, axis=1), np.take_along_axis(ordered, top, axis=1), -1
        )
        hits.scores[:, :take] = np.take_along_axis(scores, top, axis=1)
        return hits

    def _exhaustive(self, queries: TokenBatch, k: int, alive: npt.NDArray[np.bool_]) -> Hits:
        """Exact MaxSim of every query against every live document, best ``k`` kept: live
        documents in token-file order, in blocks of about ``EXHAUSTIVE_SIMS`` scores."""
        n_q = len(queries)
        best_labels = np.full((n_q, k), -1, dtype=np.int64)
        best_scores = np.full((n_q, k), -np.inf, dtype=np.float32)
        live = np.flatnonzero(alive)
        if live.size == 0:
            return Hits(best_labels, best_scores)
        live = live[np.argsort(self.offsets[live], kind="stable")]
        matrix, q_offsets = self.token_matrix(), queries.offsets
        block_docs = max(1, EXHAUSTIVE_SIMS // n_q)
        for first in range(0, live.size, block_docs):
            block = live[first : first + block_docs]
            scores = maxsim_spans(
                matrix, self.offsets[block], self.lengths[block], queries.tokens, q_offsets,
                checked=True,
            )  # fmt: skip
            merged_scores = np.concatenate([best_scores, scores], axis=1)
            merged_labels = np.concatenate([best_labels, np.broadcast_to(block, scores.shape)], 1)
            take = min(k, merged_scores.shape[1])
            top = np.argpartition(-merged_scores, take - 1, axis=1)[:, :take]
            best_scores = np.take_along_axis(merged_scores, top, axis=1)
            best_labels = np.take_along_axis(merged_labels, top, axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        best_labels = np.take_along_axis(best_labels, order, axis=1)
        best_labels[~np.isfinite(best_scores)] = -1
        return Hits(best_labels, best_scores.astype(np.float32))

    def dead_token_fraction(self, alive: npt.NDArray[np.bool_]) -> float:
        total = int(self.lengths.sum())
        return 0.0 if total == 0 else float(self.lengths[~alive].sum()) / total

    def compact(self, alive: npt.NDArray[np.bool_], generation: int, force: bool) -> bool:
        dead = self.dead_token_fraction(alive)
        if dead == 0.0 or (not force and dead <= COMPACT_AT):
            return False
        live = np.flatnonzero(alive)
        view = self._raw_rows()
        new_offsets = np.zeros_like(self.offsets)
        new_offsets[live] = np.cumsum(self.lengths[live]) - self.lengths[live]
        if self.residual_from is not None:  # the rows kept before it (adds end documents)
            before = self.offsets[live] < self.residual_from
            self.residual_from = int(self.lengths[live][before].sum())
        spans = zip(self.offsets[live].tolist(), self.lengths[live].tolist(), strict=True)
        parts = [view[o : o + n] for o, n in spans]
        data = np.concatenate(parts).tobytes() if parts else b""
        target = AppendOnlyFile(self.directory / f"tokens-{generation:06d}.bin", 0)
        target.append(data)
        target.committed = len(data)
        if self.cells is not None:
            self.cells.compact(
                list(zip(self.offsets[live].tolist(), self.lengths[live].tolist(), strict=True)),
                generation,
            )
        self._tokens = target
        self.offsets = new_offsets
        return True

    def after_commit(self, generation: int) -> None:
        """Nothing waits for a local commit (its files are the commit)."""

    def recover(self) -> None:
        """Nothing outside the folder (stale files: :func:`muvera.index.manifest.remove_stale`)."""

    def save(self, directory: Path, generation: int) -> StoreRecord:
        entry = self._save_fdes(directory, generation)
        tokens = dict(
            self._token_section, file=self._tokens.path.name, bytes=self._tokens.committed
        )
        if self.centre is not None:
            tokens["centre"] = [float(v) for v in self.centre]
        if self.residual_from is not None:
            tokens["residual_from"] = self.residual_from
        if self.cells is not None:
            tokens["cells"] = self.cells.section()
        arrays = {"offsets": self.offsets, "lengths": self.lengths}
        return StoreRecord(entry, tokens, arrays)
