"""A two-stage multi-vector index: FDE candidates from a vector store, exact MaxSim re-rank.

An index directory is self-describing and written atomically::

    manifest.json          format and library versions, store parameters, committed sizes
    encoder.npz            the FDE encoder (config + matrices): queries encode identically
    tokens.bin             documents' token vectors, ragged, append-only (float32 or float16)
    records.jsonl          one line per added document: label, id, payload (append-only)
    state-<gen>.npz        token offsets/lengths and the live mask of this generation
    <store files>          e.g. hnsw-<gen>.bin
    .lock                  held by the one writer

Every change ends by replacing ``manifest.json`` in one ``os.replace``. Append-only files
are only trusted up to the sizes the manifest records, and a generation's files are
deleted only after the next manifest is in place, so an interrupted ``add`` or crash
leaves the previous index complete and readable.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._inputs import prepare_batch
from ._storage import AppendOnlyFile, atomic_write_bytes, atomic_write_json, check_format
from ._version import __version__
from .config import FDEConfig
from .encoder import FDEEncoder
from .errors import MuveraError
from .scoring import compiled_maxsim, run_compiled_maxsim
from .stores import make_store

__all__ = ["Index", "SearchResult"]

FORMAT = "muvera.Index"
FORMAT_VERSION = 1
_TOKEN_DTYPES = {"float16": np.float16, "float32": np.float32}
_ADD_BATCH = 2048  # documents per FDE batch inside one add()
_COMPACT_AT = 0.5  # delete() compacts the token file once half of its vectors are dead
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_EXHAUSTIVE_SIMS = 1 << 22  # similarity entries per block of search_exact (16 MiB float32)


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise MuveraError(f"{name} must be a positive int, got {value!r}")


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Results of :meth:`Index.search`, row ``i`` for query ``i``, best first.

    ``ids`` is ``(n_queries, k)`` (int64 for integer ids, object for string ids) padded with
    -1; ``scores`` is float32 ``(n_queries, k)`` padded with ``-inf``: exact MaxSim when
    re-ranked, FDE inner products otherwise. ``payloads`` (when asked for) holds each hit's
    payload dict (None for padding).
    """

    ids: npt.NDArray[Any]
    scores: npt.NDArray[np.float32]
    payloads: list[list[dict[str, Any] | None]] | None = None


def _json_payload(payload: Any, index: int, what: str = "payload") -> dict[str, Any] | None:
    name = what if what != "payload" else f"payload {index}"
    if payload is None:
        return None
    if not isinstance(payload, dict):
        raise MuveraError(f"{name} must be a dict or None, got {type(payload).__name__}")
    try:
        json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise MuveraError(f"{name} is not JSON-serialisable ({exc})") from None
    return payload


class _Lock:
    """An exclusive, non-blocking advisory lock on ``directory/.lock`` (POSIX flock)."""

    def __init__(self, directory: Path) -> None:
        self.fd: int | None = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise MuveraError(
                f"index {directory} is open for writing elsewhere; open it with mode='r' to "
                "read, or close the other writer"
            ) from None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


class Index:
    """FDE index + token store + exact MaxSim re-ranking, persisted in a directory.

    Create with :meth:`create`, reopen with :meth:`open`. Ids are unique ints or strings
    (one kind per index). Use as a context manager, or call :meth:`close`, to release the
    writer lock.

    Examples
    --------
    >>> import tempfile
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.standard_normal((n, 8)).astype(np.float32) for n in (5, 3, 7)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with Index.create(tmp + "/ix", FDEConfig(dimension=8), store="exact") as index:
    ...         index.add(["a", "b", "c"], docs)
    ...         result = index.search([docs[1]], k=2)
    >>> result.ids[0, 0]
    'b'
    """

    def __init__(
        self,
        path: Path,
        mode: str,
        lock: _Lock | None,
        store_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.mode = mode
        self._lock = lock
        self._store_overrides = dict(store_overrides or {})
        self._load()

    # -- construction --------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        encoder: FDEEncoder | FDEConfig,
        store: str = "hnswlib",
        *,
        store_options: dict[str, Any] | None = None,
        token_dtype: str = "float16",
        metadata: dict[str, Any] | None = None,
    ) -> Index:
        """Create an empty index in ``path`` (a new or empty directory) and open it for writing.

        ``store`` is "hnswlib" (default), "exact" or "qdrant"; ``store_options`` are passed
        to it (hnswlib: ``M``, ``ef_construction``, ``ef``; qdrant: see
        :class:`muvera.qdrant.QdrantStore`). ``token_dtype`` is "float16" (default: half
        the disk of "float32", and re-ranking reads half the bytes; scores within float16
        rounding of float32's) or "float32". Without the compiled kernel, numpy's float16
        conversion makes float16 searches slower than float32 ones (measured in
        ``benchmarks/bench_retrieval.py``).
        """
        path = Path(path)
        if isinstance(encoder, FDEConfig):
            encoder = FDEEncoder(encoder)
        if not isinstance(encoder, FDEEncoder):
            raise MuveraError(
                f"encoder must be an FDEEncoder or FDEConfig, got {type(encoder).__name__}"
            )
        if token_dtype not in _TOKEN_DTYPES:
            raise MuveraError(
                f"token_dtype must be one of {sorted(_TOKEN_DTYPES)}, got {token_dtype!r}"
            )
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise MuveraError(
                f"cannot create an index in {path}: it exists and is not an empty directory"
            )
        options = dict(store_options or {})
        metadata = _json_payload(metadata, 0, what="metadata") or {}
        path.mkdir(parents=True, exist_ok=True)
        lock = _Lock(path)
        try:
            encoder.save(path / "encoder.npz")
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "library_version": __version__,
                "generation": 0,
                "token_dimension": encoder.config.dimension,
                "fde_dimension": encoder.output_dimension,
                "encoder": "encoder.npz",
                "store": {"kind": store, "options": options, "entry": None},
                "tokens": {"file": "tokens.bin", "dtype": token_dtype, "bytes": 0},
                "records": {"file": "records.jsonl", "bytes": 0},
                "state": None,
                "next_label": 0,
                "id_type": None,
                "metadata": metadata,
            }
            overrides: dict[str, Any] = {}
            if store == "qdrant":
                from .qdrant import QdrantStore

                remote = QdrantStore.create(encoder, options)
                manifest["store"]["entry"] = remote.entry()
                manifest["store"]["options"] = {}  # connection lives in the entry, minus secrets
                overrides = {
                    k: options[k] for k in ("client", "api_key") if options.get(k) is not None
                }
            else:  # build once to validate the options
                make_store(store, encoder.output_dimension, path, None, options)
            atomic_write_json(path / "manifest.json", manifest)
            return cls(path, "a", lock, overrides)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        mode: str = "a",
        *,
        store_options: dict[str, Any] | None = None,
    ) -> Index:
        """Open an existing index: ``mode="a"`` to read and write (takes the writer lock),
        ``mode="r"`` to read only (any number of readers). ``store_options`` override the
        stored connection of a qdrant index (``url``, ``api_key``, ``client``), or the
        search breadth of an hnswlib index (``{"ef": 400}``: kept if this writer commits)."""
        path = Path(path)
        if mode not in ("a", "r"):
            raise MuveraError(f"mode must be 'a' or 'r', got {mode!r}")
        if not (path / "manifest.json").is_file():
            raise MuveraError(f"no muvera index at {path} (manifest.json is missing)")
        lock = _Lock(path) if mode == "a" else None
        try:
            return cls(path, mode, lock, store_options)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    def _load(self) -> None:
        try:
            manifest = json.loads((self.path / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MuveraError(f"cannot read {self.path / 'manifest.json'} ({exc})") from None
        check_format(manifest, FORMAT, FORMAT_VERSION, f"index {self.path}", "a muvera index")
        self.manifest = manifest
        self.encoder = FDEEncoder.load(self.path / manifest["encoder"])
        self.token_dimension = int(manifest["token_dimension"])
        self.token_dtype = _TOKEN_DTYPES[manifest["tokens"]["dtype"]]
        self._tokens = AppendOnlyFile(
            self.path / manifest["tokens"]["file"], manifest["tokens"]["bytes"]
        )
        self._records = AppendOnlyFile(
            self.path / manifest["records"]["file"], manifest["records"]["bytes"]
        )
        self.next_label = int(manifest["next_label"])
        self.id_type: str | None = manifest["id_type"]
        store = manifest["store"]
        self._remote = store["kind"] == "qdrant"
        if self._remote:
            from .qdrant import QdrantStore

            self.store: Any = QdrantStore.connect(store["entry"], self._store_overrides)
        else:
            self.store = make_store(
                store["kind"],
                int(manifest["fde_dimension"]),
                self.path,
                store["entry"],
                store["options"],
            )
            overrides = dict(self._store_overrides)
            if overrides and (store["kind"] != "hnswlib" or set(overrides) != {"ef"}):
                raise MuveraError(
                    f"store_options {sorted(overrides)} cannot be changed when opening an "
                    f"index with the {store['kind']} store (hnswlib takes 'ef')"
                )
            if overrides:
                self.store.set_ef(overrides["ef"])
        # Per label: token offset (in vectors), token count, alive flag, id, payload.
        if manifest["state"]:
            with np.load(self.path / manifest["state"], allow_pickle=False) as state:
                self.offsets = state["offsets"].astype(np.int64)
                self.lengths = state["lengths"].astype(np.int64)
                self.alive = state["alive"].astype(bool)
        else:
            self.offsets = np.zeros(0, np.int64)
            self.lengths = np.zeros(0, np.int64)
            self.alive = np.zeros(0, bool)
        self.label_ids: list[Any] = []
        self.payloads: list[dict[str, Any] | None] = []
        for line in self._records.read_bytes().decode().splitlines():
            record = json.loads(line)
            self.label_ids.append(record["id"])
            self.payloads.append(record.get("payload"))
        if len(self.label_ids) != self.next_label or self.alive.size != self.next_label:
            raise MuveraError(f"index {self.path} is inconsistent: records and state disagree")
        self.id_to_label = {self.label_ids[i]: i for i in np.flatnonzero(self.alive).tolist()}

    # -- bookkeeping ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.id_to_label)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.id_to_label

    def __repr__(self) -> str:
        kind = self.manifest["store"]["kind"]
        return f"Index({str(self.path)!r}, store={kind!r}, documents={len(self)})"

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the writer lock (the index stays readable on disk)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self.mode == "a":
            self.mode = "closed"

    @property
    def metadata(self) -> dict[str, Any]:
        """The JSON dict given to :meth:`create` or :meth:`update_metadata` (a copy)."""
        copy: dict[str, Any] = json.loads(json.dumps(self.manifest.get("metadata") or {}))
        return copy

    def update_metadata(self, values: dict[str, Any]) -> None:
        """Merge ``values`` (a JSON dict) into :attr:`metadata` and commit atomically."""
        self._check_writable()
        values = _json_payload(values, 0, what="metadata") or {}
        with self._mutation():
            self.manifest = dict(self.manifest, metadata={**self.metadata, **values})
            self._commit()

    @property
    def ids(self) -> list[Any]:
        """Ids of the live documents, in insertion order."""
        return [self.label_ids[i] for i in np.flatnonzero(self.alive).tolist()]

    def _check_writable(self) -> None:
        if self.mode != "a":
            raise MuveraError(f"index {self.path} is open read-only (mode={self.mode!r})")

    @contextmanager
    def _mutation(self) -> Iterator[None]:
        """On any failure, drop in-memory changes by reloading the last committed state."""
        try:
            yield
        except BaseException:
            self._load()
            raise

    def _commit(self) -> None:
        old_files = self._generation_files(self.manifest)
        generation = int(self.manifest["generation"]) + 1
        state_name = f"state-{generation:06d}.npz"
        buffer = io.BytesIO()
        np.savez(buffer, offsets=self.offsets, lengths=self.lengths, alive=self.alive)
        atomic_write_bytes(self.path / state_name, buffer.getvalue())
        manifest = dict(self.manifest)
        manifest["generation"] = generation
        manifest["library_version"] = __version__
        manifest["state"] = state_name
        manifest["tokens"] = dict(
            manifest["tokens"], file=self._tokens.path.name, bytes=self._tokens.committed
        )
        manifest["records"] = dict(
            manifest["records"], file=self._records.path.name, bytes=self._records.committed
        )
        manifest["next_label"] = self.next_label
        manifest["id_type"] = self.id_type
        manifest["store"] = dict(manifest["store"], entry=self.store.save(self.path, generation))
        atomic_write_json(self.path / "manifest.json", manifest)
        self.manifest = manifest
        for name in old_files - self._generation_files(manifest):
            (self.path / name).unlink(missing_ok=True)

    @staticmethod
    def _generation_files(manifest: dict[str, Any]) -> set[str]:
        files = {manifest["tokens"]["file"], manifest["records"]["file"]}
        if manifest.get("state"):
            files.add(manifest["state"])
        entry = manifest["store"].get("entry") or {}
        for key in ("file", "state"):
            if isinstance(entry.get(key), str):
                files.add(entry[key])
        return files

    def _check_ids(self, ids: Any, n: int, *, new: bool) -> list[Any]:
        if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
            raise MuveraError(f"ids must be a list of ints or strings, got {type(ids).__name__}")
        out: list[Any] = []
        for i, doc_id in enumerate(list(ids)):
            if isinstance(doc_id, np.integer):
                doc_id = int(doc_id)
            if isinstance(doc_id, np.str_):
                doc_id = str(doc_id)
            kind = (
                "int"
                if isinstance(doc_id, int) and not isinstance(doc_id, bool)
                else ("str" if isinstance(doc_id, str) else None)
            )
            if kind is None:
                raise MuveraError(f"id {i} must be an int or a str, got {type(doc_id).__name__}")
            if self.id_type is not None and kind != self.id_type:
                raise MuveraError(f"id {i} is a {kind}, but this index uses {self.id_type} ids")
            out.append(doc_id)
        kinds = {type(x) for x in out}
        if len(kinds) > 1:
            raise MuveraError("ids mix ints and strings; use one kind per index")
        if len(out) != n:
            raise MuveraError(f"got {len(out)} ids for {n} documents")
        seen: set[Any] = set()
        for i, doc_id in enumerate(out):
            if doc_id in seen:
                raise MuveraError(f"id {doc_id!r} appears twice (item {i})")
            seen.add(doc_id)
            if new and doc_id in self.id_to_label:
                raise MuveraError(f"id {doc_id!r} (item {i}) is already in the index; use upsert()")
        return out

    def _validate_new(
        self, ids: Any, multivectors: Any, payloads: Any, *, replace: bool
    ) -> tuple[list[Any], list[npt.NDArray[np.float32]], list[dict[str, Any] | None]]:
        """Everything :meth:`add` / :meth:`upsert` check before writing anything."""
        self._check_writable()
        docs = self._check_documents(multivectors)
        doc_ids = self._check_ids(ids, len(docs), new=not replace)
        return doc_ids, docs, self._check_payloads(payloads, len(docs))

    @staticmethod
    def _check_payloads(payloads: Any, n: int) -> list[dict[str, Any] | None]:
        if payloads is None:
            return [None] * n
        if len(payloads) != n:
            raise MuveraError(f"got {len(payloads)} payloads for {n} documents")
        return [_json_payload(p, i) for i, p in enumerate(payloads)]

    def _check_documents(self, multivectors: Any) -> list[npt.NDArray[np.float32]]:
        batch = prepare_batch(multivectors, self.token_dimension, what="add")
        docs = batch.items()
        half = self._remote or self.token_dtype == np.float16  # qdrant keeps float16 tokens
        for i, doc in enumerate(docs):
            if doc.shape[0] == 0:
                raise MuveraError(
                    f"add: document {i} has no tokens (an empty document cannot be retrieved)"
                )
            if half and float(np.abs(doc).max()) > _FLOAT16_MAX:
                raise MuveraError(
                    f"add: document {i} has token values beyond float16's range (+-65504); "
                    'scale the vectors or create the index with token_dtype="float32"'
                )
        return docs

    # -- writing -------------------------------------------------------------------------
    def add(
        self,
        ids: Sequence[int] | Sequence[str],
        multivectors: Any,
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Add documents: ``ids[i]`` gets the token matrix ``multivectors[i]`` ``(n_i, d)``
        (a list, or a padded array is not accepted here) and ``payloads[i]`` (a JSON dict).

        Ids must be new (see :meth:`upsert`). Everything is validated before anything is
        written; the change is committed atomically.
        """
        doc_ids, docs, checked = self._validate_new(ids, multivectors, payloads, replace=False)
        if not docs:
            return
        with self._mutation():
            self._append(doc_ids, docs, checked)
            self._commit()

    def upsert(
        self,
        ids: Sequence[int] | Sequence[str],
        multivectors: Any,
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Add documents, replacing those whose ids already exist (one atomic commit)."""
        doc_ids, docs, checked = self._validate_new(ids, multivectors, payloads, replace=True)
        if not docs:
            return
        with self._mutation():
            existing = [self.id_to_label[d] for d in doc_ids if d in self.id_to_label]
            self._remove_labels(np.array(existing, dtype=np.int64))
            self._append(doc_ids, docs, checked)
            self._commit()

    def delete(self, ids: Sequence[int] | Sequence[str]) -> None:
        """Delete documents by id; an unknown id raises (nothing is deleted then).

        Once half of the stored token vectors belong to deleted documents, the token file
        is compacted (see :meth:`compact`).
        """
        self._check_writable()
        doc_ids = self._check_ids(ids, len(list(ids)), new=False)
        missing = [d for d in doc_ids if d not in self.id_to_label]
        if missing:
            raise MuveraError(
                f"cannot delete unknown ids {missing[:5]}{'...' if len(missing) > 5 else ''}"
            )
        if not doc_ids:
            return
        with self._mutation():
            self._remove_labels(np.array([self.id_to_label[d] for d in doc_ids], dtype=np.int64))
            self._commit()
        if self._dead_token_fraction() > _COMPACT_AT:
            self.compact()

    def _dead_token_fraction(self) -> float:
        total = int(self.lengths.sum())
        return 0.0 if total == 0 else float(self.lengths[~self.alive].sum()) / total

    def _remove_labels(self, labels: npt.NDArray[np.int64]) -> None:
        if labels.size == 0:
            return
        self.store.delete(labels)
        self.alive[labels] = False
        for label in labels.tolist():
            del self.id_to_label[self.label_ids[label]]

    def _append(
        self,
        doc_ids: list[Any],
        docs: list[npt.NDArray[np.float32]],
        payloads: list[dict[str, Any] | None],
    ) -> None:
        if self.id_type is None:
            self.id_type = "int" if isinstance(doc_ids[0], int) else "str"
        for start in range(0, len(docs), _ADD_BATCH):
            part = docs[start : start + _ADD_BATCH]
            part_ids = doc_ids[start : start + _ADD_BATCH]
            part_payloads = payloads[start : start + _ADD_BATCH]
            labels = np.arange(self.next_label, self.next_label + len(part), dtype=np.int64)
            fdes = self.encoder.encode_documents(part)
            lengths = np.array([d.shape[0] for d in part], dtype=np.int64)
            itemsize = np.dtype(self.token_dtype).itemsize * self.token_dimension
            first = self._tokens.committed // itemsize
            if self._remote:
                self.store.add(labels, fdes, part, part_ids, part_payloads)
            else:
                values = np.concatenate(part).astype(self.token_dtype)
                start_byte = self._tokens.append(values.tobytes())
                self._tokens.committed = start_byte + values.nbytes
                self.store.add(labels, fdes)
            offsets = (
                first + np.concatenate([[0], np.cumsum(lengths)[:-1]])
                if not self._remote
                else np.zeros(len(part), np.int64)
            )
            lines = "".join(
                json.dumps({"label": int(label), "id": doc_id, "payload": payload}) + "\n"
                for label, doc_id, payload in zip(
                    labels.tolist(), part_ids, part_payloads, strict=True
                )
            ).encode()
            start_byte = self._records.append(lines)
            self._records.committed = start_byte + len(lines)
            self.offsets = np.concatenate([self.offsets, offsets])
            self.lengths = np.concatenate([self.lengths, lengths])
            self.alive = np.concatenate([self.alive, np.ones(len(part), dtype=bool)])
            self.label_ids.extend(part_ids)
            self.payloads.extend(part_payloads)
            for label, doc_id in zip(labels.tolist(), part_ids, strict=True):
                self.id_to_label[doc_id] = label
            self.next_label += len(part)

    def compact(self) -> None:
        """Rewrite the token file without deleted documents' vectors (atomic)."""
        self._check_writable()
        if self._remote or not self._dead_token_fraction():
            return
        with self._mutation():
            generation = int(self.manifest["generation"]) + 1
            name = f"tokens-{generation:06d}.bin"
            live = np.flatnonzero(self.alive)
            view = self._token_matrix()
            new_offsets = np.zeros_like(self.offsets)
            parts = []
            position = 0
            for label in live.tolist():
                off, n = int(self.offsets[label]), int(self.lengths[label])
                parts.append(view[off : off + n])
                new_offsets[label] = position
                position += n
            data = np.concatenate(parts).astype(self.token_dtype).tobytes() if parts else b""
            target = AppendOnlyFile(self.path / name, 0)
            target.append(data)
            target.committed = len(data)
            self._tokens = target
            self.offsets = new_offsets
            self._commit()

    # -- reading -------------------------------------------------------------------------
    def _token_matrix(self) -> npt.NDArray[Any]:
        return self._tokens.view(self.token_dtype).reshape(-1, self.token_dimension)

    def tokens(self, doc_id: int | str) -> npt.NDArray[np.float32]:
        """The stored token vectors of one document, float32 ``(n_tokens, d)``."""
        if doc_id not in self.id_to_label:
            raise MuveraError(f"unknown id {doc_id!r}")
        if self._remote:
            raise MuveraError("a qdrant index keeps token vectors on the server")
        label = self.id_to_label[doc_id]
        off, n = int(self.offsets[label]), int(self.lengths[label])
        return np.asarray(self._token_matrix()[off : off + n], dtype=np.float32)

    def search(
        self,
        query_multivectors: Any,
        k: int = 10,
        candidates: int = 100,
        *,
        rerank: bool = True,
        lengths: Any = None,
        mask: Any = None,
        with_payloads: bool = False,
        query_filter: Any = None,
    ) -> SearchResult:
        """Two-stage search: FDE top-``candidates`` from the store, then exact MaxSim on
        the stored token vectors of those candidates, keeping the top ``k``.

        ``query_multivectors`` takes the encoder's batch forms (a list of ``(n_i, d)`` arrays,
        or a padded array with ``lengths``/``mask``). ``rerank=False`` returns the FDE top
        ``k`` with FDE scores. ``query_filter`` is passed to Qdrant (qdrant store only).
        """
        for name, value in (("k", k), ("candidates", candidates)):
            _check_positive(name, value)
        if candidates < k:
            raise MuveraError(f"candidates ({candidates}) must be >= k ({k})")
        queries = self._check_queries(query_multivectors, lengths, mask, query_filter)
        q_fdes = self.encoder.encode_queries(queries)
        if self._remote:
            labels, scores, hit_payloads = self.store.search(
                q_fdes, queries, k, candidates, rerank=rerank, query_filter=query_filter
            )
            return self._result(labels, scores, with_payloads, hit_payloads)
        labels, scores = self.store.search(q_fdes, candidates if rerank else k, exact=not rerank)
        if rerank:
            labels, scores = self._rerank(queries, labels, k)
        return self._result(labels, scores, with_payloads)

    def search_exact(
        self,
        query_multivectors: Any,
        k: int = 10,
        *,
        lengths: Any = None,
        mask: Any = None,
        with_payloads: bool = False,
        query_filter: Any = None,
    ) -> SearchResult:
        """Brute-force exact MaxSim against every stored document: the ranking that
        :meth:`search` approximates (ground truth for evaluation, or small corpora).

        Takes the same query forms as :meth:`search` and returns the same
        :class:`SearchResult`. Cost grows with the corpus: every stored token vector is
        read once per call, in blocks, for all queries of the call together. The qdrant
        store runs it on the server as a full MaxSim scan of the ``tokens`` vectors.
        """
        _check_positive("k", k)
        queries = self._check_queries(query_multivectors, lengths, mask, query_filter)
        if self._remote:
            labels, scores, hit_payloads = self.store.search(
                None, queries, k, None, rerank=True, query_filter=query_filter
            )
            return self._result(labels, scores, with_payloads, hit_payloads)
        labels, scores = self._exhaustive(queries, k)
        return self._result(labels, scores, with_payloads)

    def _check_queries(
        self, query_multivectors: Any, lengths: Any, mask: Any, query_filter: Any
    ) -> list[npt.NDArray[np.float32]]:
        if query_filter is not None and not self._remote:
            raise MuveraError("query_filter needs the qdrant store")
        batch = prepare_batch(
            query_multivectors, self.token_dimension, lengths=lengths, mask=mask, what="search"
        )
        queries = batch.items()
        for i, q in enumerate(queries):
            if q.shape[0] == 0:
                raise MuveraError(f"search: query {i} has no tokens")
        return queries

    def _exhaustive(
        self, queries: list[npt.NDArray[np.float32]], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Exact MaxSim of every query against every live document, best ``k`` kept.

        Live documents are visited in token-file order, in blocks of whole documents, read
        in place by the compiled MaxSim kernel (blocks of about ``_EXHAUSTIVE_SIMS``
        scores). Without it, numpy: blocks of about ``_EXHAUSTIVE_SIMS`` similarity
        entries, read in place when their documents lie next to each other in the file.
        """
        n_q = len(queries)
        best_labels = np.full((n_q, k), -1, dtype=np.int64)
        best_scores = np.full((n_q, k), -np.inf, dtype=np.float32)
        live = np.flatnonzero(self.alive)
        if live.size == 0:
            return best_labels, best_scores
        live = live[np.argsort(self.offsets[live], kind="stable")]
        q_all = np.concatenate(queries)  # (total query tokens, d)
        q_lengths = np.array([q.shape[0] for q in queries])
        q_starts = np.cumsum(q_lengths) - q_lengths
        q_offsets = np.concatenate([[0], np.cumsum(q_lengths)]).astype(np.int64)
        matrix = self._token_matrix()
        kernel = compiled_maxsim(matrix)
        block_docs = max(1, _EXHAUSTIVE_SIMS // n_q)  # compiled kernel: bounds the scores
        block_tokens = max(1024, _EXHAUSTIVE_SIMS // q_all.shape[0])  # numpy: the similarities
        ends = np.cumsum(self.lengths[live])
        first = 0
        while first < live.size:
            if kernel is not None:
                stop = min(first + block_docs, live.size)
            else:
                stop = int(
                    np.searchsorted(ends, ends[first] - self.lengths[live[first]] + block_tokens)
                )
                stop = min(max(stop, first + 1), live.size)
            block = live[first:stop]
            offsets, counts = self.offsets[block], self.lengths[block]
            if kernel is not None:  # the index's own spans
                scores = run_compiled_maxsim(kernel, matrix, offsets, counts, q_all, q_offsets)
            else:
                scores = self._exhaustive_numpy(matrix, offsets, counts, q_all, q_starts)
            merged_scores = np.concatenate([best_scores, scores], axis=1)
            merged_labels = np.concatenate([best_labels, np.broadcast_to(block, scores.shape)], 1)
            take = min(k, merged_scores.shape[1])
            top = np.argpartition(-merged_scores, take - 1, axis=1)[:, :take]
            best_scores = np.take_along_axis(merged_scores, top, axis=1)
            best_labels = np.take_along_axis(merged_labels, top, axis=1)
            first = stop
        order = np.argsort(-best_scores, axis=1, kind="stable")
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        best_labels = np.take_along_axis(best_labels, order, axis=1)
        best_labels[~np.isfinite(best_scores)] = -1
        return best_labels, best_scores.astype(np.float32)

    @staticmethod
    def _exhaustive_numpy(
        matrix: npt.NDArray[Any],
        offsets: npt.NDArray[np.int64],
        counts: npt.NDArray[np.int64],
        q_all: npt.NDArray[np.float32],
        q_starts: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.float32]:
        """(queries, documents) MaxSim of one block with numpy (no compiled kernel)."""
        if np.array_equal(offsets[1:], offsets[:-1] + counts[:-1]):
            tokens = matrix[int(offsets[0]) : int(offsets[-1] + counts[-1])]
        else:
            spans = zip(offsets.tolist(), counts.tolist(), strict=True)
            tokens = np.concatenate([matrix[o : o + n] for o, n in spans])
        sims = tokens.astype(np.float32, copy=False) @ q_all.T
        starts = np.cumsum(counts) - counts
        per_token = np.maximum.reduceat(sims, starts, axis=0)  # (docs, query tokens)
        scores: npt.NDArray[np.float32] = np.add.reduceat(per_token, q_starts, axis=1).T
        return scores

    def _rerank(
        self, queries: list[npt.NDArray[np.float32]], labels: npt.NDArray[np.int64], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Exact MaxSim of each query against its candidates, best ``k`` kept.

        Candidates are read in token-file order, in place from the memory map, by the
        compiled MaxSim kernel (no similarity matrix; float16 converted on the fly; two
        threads where there are two CPUs). Without it, numpy: float32 slices go straight
        into their rows of one similarity matrix, float16 ones are gathered and converted
        once, then a segmented max. Ties keep the file order.
        """
        n_q = len(queries)
        out_labels = np.full((n_q, k), -1, dtype=np.int64)
        out_scores = np.full((n_q, k), -np.inf, dtype=np.float32)
        matrix = self._token_matrix()
        in_place = matrix.dtype == np.float32
        kernel = compiled_maxsim(matrix)
        for i, query in enumerate(queries):
            cand = labels[i][labels[i] >= 0]
            if cand.size == 0:
                continue
            cand = cand[np.argsort(self.offsets[cand], kind="stable")]  # file order
            lengths = self.lengths[cand]
            if kernel is not None:  # the index's own spans: no need to check them again
                exact = run_compiled_maxsim(
                    kernel, matrix, self.offsets[cand], lengths, query,
                    np.array([0, query.shape[0]], dtype=np.int64),
                )[0]  # fmt: skip
            else:
                exact = self._rerank_numpy(matrix, in_place, query, cand, lengths)
            order = np.argsort(-exact, kind="stable")[:k]
            out_labels[i, : order.size] = cand[order]
            out_scores[i, : order.size] = exact[order]
        return out_labels, out_scores

    def _rerank_numpy(
        self,
        matrix: npt.NDArray[Any],
        in_place: bool,
        query: npt.NDArray[np.float32],
        cand: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.float32]:
        starts = np.cumsum(lengths) - lengths
        spans = zip(self.offsets[cand].tolist(), lengths.tolist(), starts.tolist(), strict=True)
        if in_place:  # each slice of the memmap straight into its rows of one product
            query_t = np.ascontiguousarray(query.T)
            sims = np.empty((int(starts[-1] + lengths[-1]), query.shape[0]), np.float32)
            for o, n, s in spans:
                np.matmul(matrix[o : o + n], query_t, out=sims[s : s + n])
        else:  # float16: one gather, one conversion, one product
            tokens = np.concatenate([matrix[o : o + n] for o, n, _ in spans])
            sims = tokens.astype(np.float32) @ query.T
        exact: npt.NDArray[np.float32] = np.maximum.reduceat(sims, starts, axis=0).sum(axis=1)
        return exact

    def _result(
        self,
        labels: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float32],
        with_payloads: bool,
        hit_payloads: list[list[dict[str, Any] | None]] | None = None,
    ) -> SearchResult:
        if self.id_type == "str":
            ids: npt.NDArray[Any] = np.full(labels.shape, -1, dtype=object)
        else:
            ids = np.full(labels.shape, -1, dtype=np.int64)
        found = labels >= 0
        ids[found] = [self.label_ids[label] for label in labels[found].tolist()]
        payloads = None
        if with_payloads:
            payloads = hit_payloads or [
                [self.payloads[label] if label >= 0 else None for label in row.tolist()]
                for row in labels
            ]
        return SearchResult(ids=ids, scores=scores.astype(np.float32), payloads=payloads)

    # -- text convenience ----------------------------------------------------------------
    def add_texts(
        self,
        model: Any,
        ids: Sequence[int] | Sequence[str],
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any] | None] | None = None,
        *,
        store_text: bool = True,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> None:
        """Encode ``texts`` with a :class:`muvera.ColBERT` model and :meth:`add` them; the
        text is kept in each payload under ``"text"`` unless ``store_text=False``."""
        self._check_model(model)
        if payloads is not None and len(payloads) != len(texts):
            raise MuveraError(f"got {len(payloads)} payloads for {len(texts)} texts")
        tokens = model.encode_documents(texts, batch_size=batch_size, show_progress=show_progress)
        merged: list[dict[str, Any] | None] = []
        for i, text in enumerate(texts):
            base = _json_payload(payloads[i], i) if payloads is not None else None
            merged.append({**(base or {}), "text": text} if store_text else base)
        self.add(ids, tokens, merged)

    def search_texts(
        self,
        model: Any,
        texts: Sequence[str],
        k: int = 10,
        candidates: int = 100,
        *,
        rerank: bool = True,
        query_filter: Any = None,
    ) -> SearchResult:
        """Encode query ``texts`` with ``model`` and :meth:`search`; payloads included."""
        self._check_model(model)
        queries = model.encode_queries(texts)
        return self.search(
            queries, k, candidates, rerank=rerank, with_payloads=True, query_filter=query_filter
        )

    def _check_model(self, model: Any) -> None:
        dim = getattr(model, "dimension", None)
        if dim != self.token_dimension:
            raise MuveraError(
                f"the model gives {dim}-d token vectors; this index holds {self.token_dimension}-d"
            )
