"""The :class:`Index` front: two-stage multi-vector search over a store, persisted in a folder.

It checks every input once, assigns labels, keeps ids and payloads (:mod:`.records`) and
commits (:mod:`.manifest`); FDEs come from its :class:`~muvera.FDEEncoder`; where FDEs and
token vectors live and how both search stages run is the store's business
(:class:`muvera.stores.Store`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._version import __version__
from ..batch import TokenBatch, checked_batch
from ..errors import MuveraError
from ..fde import FDEConfig, FDEEncoder
from ..fde.calibration import Calibration
from ..stores import TOKEN_DTYPES, store_class
from . import manifest as mf
from .bulk import BulkMethods
from .calibrating import decide, encoder_for, initial_section
from .checksums import compute_checksums, verify_checksums
from .loading import load_generation
from .reading import ReadMethods
from .records import json_payload
from .texts import TextMethods

__all__ = ["Index"]

_log = logging.getLogger("muvera")
_ADD_BATCH = 2048  # documents per FDE batch inside one add()


class Index(ReadMethods, TextMethods, BulkMethods):
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
        lock: mf.Lock | None,
        store_overrides: dict[str, Any] | None = None,
        verify: bool = False,
    ) -> None:
        self.path = path
        self.mode = mode
        self._lock = lock
        self._store_overrides = dict(store_overrides or {})
        self._retired: dict[str, float] = {}  # superseded files -> since when (a writer's)
        self._load(verify)

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
        checksums: bool = False,
        calibration: str | Calibration = "auto",
    ) -> Index:
        """Create an empty index in ``path`` (a new or empty directory) and open it for writing.

        ``store`` is "hnswlib" (default), "exact" or "qdrant"; ``store_options`` are passed
        to it (hnswlib: ``M``, ``ef_construction``, ``ef``, ``quantization``; qdrant: see
        :class:`muvera.stores.QdrantStore`). ``token_dtype`` is "float16" (default: half
        the disk of "float32", and re-ranking reads half the bytes; scores within float16
        rounding of float32's), "float32", or the quantized "int8" / "int4" (one float32
        scale and 1 or 1/2 byte per value: about 1/2 or 1/4 of float16's token bytes, the
        re-rank scoring the decoded vectors), or "residual4" (int4's size, each token
        coded as its difference from its token cell's centroid: closer to float16 than
        int4; needs the token cells), "residual4lm" (residual4's bytes, each 4-bit code
        decoding to a level of the Lloyd-Max quantizer of a Gaussian at a least-squares
        scale per token: 0.57 of residual4's squared error) or "residual2" (the same
        differences in 2 bits a value: half of residual4's bytes, less close); fidelity
        measured in ``benchmarks/bench_token_codes.py``; local stores only. Without the
        compiled kernel, numpy's float16 conversion makes float16 searches slower than float32 ones
        (measured in ``benchmarks/bench_retrieval.py``). ``checksums=True`` records a
        CRC-32 of every file at each commit, for ``Index.open(..., verify=True)`` and
        :meth:`verify` (see :mod:`muvera.index.checksums` for the cost). ``calibration``:
        "auto" (default) fits a centring at the first :meth:`add` when its tokens share a
        large common component (anisotropy >= 0.5; see :mod:`muvera.fde.calibration`),
        "centre" always does, "off" never does; a fitted
        :class:`~muvera.fde.calibration.Calibration` is used as given. :attr:`calibration`
        reports what was decided.
        """
        path = Path(path)
        if isinstance(encoder, FDEConfig):
            encoder = FDEEncoder(encoder)
        if not isinstance(encoder, FDEEncoder):
            raise MuveraError(
                f"encoder must be an FDEEncoder or FDEConfig, got {type(encoder).__name__}"
            )
        if token_dtype not in TOKEN_DTYPES:
            raise MuveraError(
                f"token_dtype must be one of {sorted(TOKEN_DTYPES)}, got {token_dtype!r}"
            )
        kind = store_class(store)
        section = initial_section(calibration, encoder)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise MuveraError(
                f"cannot create an index in {path}: it exists and is not an empty directory"
            )
        options = dict(store_options or {})
        metadata = json_payload(metadata, 0, what="metadata") or {}
        made = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        lock = mf.Lock(path)
        try:
            encoder.save(path / "encoder.npz")
            created = kind.create(path, encoder, options, token_dtype)
            manifest = mf.new_manifest(encoder, store, created.options, metadata)
            manifest["calibration"] = section
            manifest["format_version"] = mf.reader_version(manifest, token_dtype, False)
            record = created.save(path, 0)
            state = mf.write_state(path, 0, {"alive": np.zeros(0, bool), **record.arrays})
            manifest.update(state=state, tokens=record.tokens)
            manifest["store"]["entry"] = record.entry
            if checksums:
                manifest["checksums"] = compute_checksums(path, manifest, None)
            mf.write_manifest(path, manifest)
            return cls(path, "a", lock, kind.session_options(options))
        except BaseException:
            lock.release()
            mf.remove_created(path, made)  # a failed create leaves nothing behind
            raise

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        mode: str = "a",
        *,
        store_options: dict[str, Any] | None = None,
        verify: bool = False,
    ) -> Index:
        """Open an existing index: ``mode="a"`` to read and write (takes the writer lock),
        ``mode="r"`` to read only (any number of readers). ``store_options`` override the
        stored connection of a qdrant index (``url``, ``api_key``, ``client``), or the
        search breadth of an hnswlib index (``{"ef": 400}``: kept if this writer commits)
        and its threads (``{"num_threads": 2}``: this session only; see docs/search.md).
        ``verify=True`` first checks every file against the checksums recorded by an index
        created with ``checksums=True`` (reads every byte; a MuveraError names a damaged
        file)."""
        path = Path(path)
        if mode not in ("a", "r"):
            raise MuveraError(f"mode must be 'a' or 'r', got {mode!r}")
        if not (path / mf.MANIFEST).is_file():
            raise MuveraError(f"no muvera index at {path} (manifest.json is missing)")
        lock = mf.Lock(path) if mode == "a" else None
        try:
            return cls(path, mode, lock, store_options, verify)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    def _load(self, verify: bool = False) -> None:
        """(Re)read the committed generation (see :func:`.loading.load_generation`)."""
        loaded = load_generation(self.path, self._store_overrides, verify)
        self.manifest, self.encoder, self.store, self.records = loaded
        self.token_dimension = int(self.manifest["token_dimension"])
        if self.mode == "a":
            mf.remove_stale(self.path, self.manifest)
            self.store.recover()

    def verify(self) -> None:
        """Check every file of this generation against the manifest's checksums (an index
        created with ``checksums=True``); a MuveraError names the first damaged file."""
        verify_checksums(self.path, self.manifest)

    def refresh(self) -> bool:
        """Move a reader to the latest commit (a reader otherwise keeps seeing the
        generation it opened, whole, whatever writers do meanwhile). Returns whether the
        generation changed; a writer always sees its own commits (False)."""
        if self.mode != "r":
            return False
        generation = self.manifest["generation"]
        self._load()
        return bool(self.manifest["generation"] != generation)

    # -- bookkeeping ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.records.id_to_label

    def __repr__(self) -> str:
        kind = self.manifest["store"]["kind"]
        return f"Index({str(self.path)!r}, store={kind!r}, documents={len(self)})"

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retire(self, names: set[str], grace: float | None = None) -> None:
        """Files the last commit no longer refers to are deleted once they have been
        superseded for ``grace`` seconds (at a later commit, or when the writer closes):
        a reader that read the previous manifest has that long to open its files."""
        now, grace = time.monotonic(), mf.GRACE_S if grace is None else grace
        for name in names:
            self._retired.setdefault(name, now)
        for name, since in list(self._retired.items()):
            if now - since >= grace:
                (self.path / name).unlink(missing_ok=True)
                del self._retired[name]

    def close(self) -> None:
        """Release the writer lock (the index stays readable on disk)."""
        if self.mode == "a":
            self._retire(set(), grace=0.0)  # what older generations left
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self.mode == "a":
            self.mode = "closed"

    @property
    def metadata(self) -> dict[str, Any]:
        """The JSON dict given to :meth:`create` or :meth:`update_metadata` (a copy)."""
        import json

        copy: dict[str, Any] = json.loads(json.dumps(self.manifest.get("metadata") or {}))
        return copy

    def update_metadata(self, values: dict[str, Any]) -> None:
        """Merge ``values`` (a JSON dict) into :attr:`metadata` and commit atomically."""
        self._check_writable()
        values = json_payload(values, 0, what="metadata") or {}
        with self._mutation():
            self.manifest = dict(self.manifest, metadata={**self.metadata, **values})
            self._commit()

    @property
    def calibration(self) -> dict[str, Any]:
        """What this index decided: ``{"kind": "none" | "pending" | "centre", ...}`` with
        the reason (none), or the fitted mean's anisotropy and token count (centre)."""
        section = dict(self.manifest.get("calibration") or {"kind": "none", "reason": "made "
                       "before calibration existed", "anisotropy": None})  # fmt: skip
        section.pop("mean", None)
        return section

    @property
    def ids(self) -> list[Any]:
        """Ids of the live documents, in insertion order."""
        return self.records.ids

    @property
    def token_dtype(self) -> Any:
        """numpy dtype of the stored token vectors (Qdrant: float16; int8 for "int4",
        "residual4", "residual4lm" and "residual2", two or four codes a byte)."""
        return TOKEN_DTYPES[(self.manifest.get("tokens") or {}).get("dtype", "float16")]

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
        old_files = mf.generation_files(self.manifest)
        generation = int(self.manifest["generation"]) + 1
        record = self.store.save(self.path, generation)
        state = mf.write_state(
            self.path, generation, {"alive": self.records.alive, **record.arrays}
        )
        manifest = dict(self.manifest, tokens=record.tokens)
        manifest.update(
            generation=generation,
            library_version=__version__,
            state=state,
            tokens=record.tokens,
            records=self.records.section(),
            next_label=self.records.next_label,
            id_type=self.records.id_type,
        )
        manifest["store"] = dict(manifest["store"], entry=record.entry)
        manifest["format_version"] = mf.reader_version(
            manifest, record.tokens.get("dtype"), self.records.updated
        )
        if "checksums" in manifest:
            manifest["checksums"] = compute_checksums(self.path, manifest, manifest["checksums"])
        mf.write_manifest(self.path, manifest)
        self.manifest = manifest
        self._retire(old_files - mf.generation_files(manifest))
        try:
            self.store.after_commit(generation)
        except Exception as exc:  # committed all the same; retried at the next writer's open
            _log.warning("index %s: commit %d stands, but %s", self.path, generation, exc)

    # -- writing -------------------------------------------------------------------------
    def _check_new(
        self, ids: Any, multivectors: Any, payloads: Any, lengths: Any, mask: Any, *, new: bool
    ) -> tuple[list[Any], TokenBatch, list[dict[str, Any] | None]]:
        """Everything :meth:`add` / :meth:`upsert` check before writing anything."""
        self._check_writable()
        docs = checked_batch(multivectors, self.token_dimension, lengths, mask, "add", "document")
        self.store.check_documents(docs)
        doc_ids = self.records.check_ids(ids, len(docs), new=new)
        return doc_ids, docs, self.records.check_payloads(payloads, len(docs))

    def add(
        self,
        ids: Sequence[int] | Sequence[str],
        multivectors: Any,
        payloads: Sequence[dict[str, Any] | None] | None = None,
        *,
        lengths: Any = None,
        mask: Any = None,
    ) -> None:
        """Add documents: ``ids[i]`` gets the tokens of item ``i`` of ``multivectors`` and
        ``payloads[i]`` (a JSON dict).

        ``multivectors`` takes the encoder's batch forms: a list of ``(n_i, d)`` arrays, or
        a padded ``(n, T, d)`` array with ``lengths=`` (valid tokens per document) or
        ``mask=`` (as for :meth:`FDEEncoder.encode_documents`; without them every position
        of a padded array is a token). Ids must be new (see :meth:`upsert`). Everything is
        validated before anything is written; the change is committed atomically.
        """
        self._write(ids, multivectors, payloads, lengths, mask, replace=False)

    def upsert(
        self,
        ids: Sequence[int] | Sequence[str],
        multivectors: Any,
        payloads: Sequence[dict[str, Any] | None] | None = None,
        *,
        lengths: Any = None,
        mask: Any = None,
    ) -> None:
        """Add documents, replacing those whose ids already exist (one atomic commit)."""
        self._write(ids, multivectors, payloads, lengths, mask, replace=True)

    def _write(
        self, ids: Any, multivectors: Any, payloads: Any, lengths: Any, mask: Any, *, replace: bool
    ) -> None:
        doc_ids, docs, checked = self._check_new(
            ids, multivectors, payloads, lengths, mask, new=not replace
        )
        if not len(docs):
            return
        section = decide(
            self.manifest.get("calibration") or {}, np.asarray(docs.tokens), self.encoder,
            self.records.next_label == 0,
        )  # fmt: skip
        with self._mutation():
            if section is not None and isinstance(self.encoder, FDEEncoder):
                self.manifest = dict(self.manifest, calibration=section)
                self.encoder = encoder_for(section, self.encoder, self.path)
            if replace:
                known = self.records.id_to_label
                self._remove(np.array([known[d] for d in doc_ids if d in known], dtype=np.int64))
            self._append(doc_ids, docs, checked)
            self._commit_change(len(docs))

    def update_payload(
        self, doc_id: int | str, values: dict[str, Any], *, replace: bool = False
    ) -> None:
        """Merge ``values`` into the payload of ``doc_id`` (``replace=True``: make it the
        payload), in one commit; tokens and FDEs are untouched."""
        self._check_writable()
        label = self._labels([doc_id])[0]
        values = json_payload(values, 0, what="payload") or {}
        payload = values if replace else {**(self.records.payloads[label] or {}), **values}
        with self._mutation():
            self.records.update(label, payload)
            self.store.update_payloads([label], [payload])
            self._commit_change(0)

    def delete(self, ids: Sequence[int] | Sequence[str]) -> None:
        """Delete documents by id; an unknown id raises (nothing is deleted then).

        Once half of the stored token vectors belong to deleted documents, the token file
        is compacted (see :meth:`compact`).
        """
        self._check_writable()
        doc_ids = self.records.check_ids(ids, len(list(ids)), new=False)
        known = self.records.id_to_label
        missing = [d for d in doc_ids if d not in known]
        if missing:
            raise MuveraError(
                f"cannot delete unknown ids {missing[:5]}{'...' if len(missing) > 5 else ''}"
            )
        if not doc_ids:
            return
        with self._mutation():
            self._remove(np.array([known[d] for d in doc_ids], dtype=np.int64))
            self._commit_change(0)
        if self._bulk is None:
            self._compact(force=False)

    def compact(self) -> None:
        """Rewrite the token file without deleted documents' vectors (atomic)."""
        self._check_writable()
        self._compact(force=True)

    def _compact(self, force: bool) -> None:
        with self._mutation():
            generation = int(self.manifest["generation"]) + 1
            if self.store.compact(self.records.alive, generation, force):
                self._commit()

    def _remove(self, labels: npt.NDArray[np.int64]) -> None:
        if labels.size:
            self.store.delete(labels)
            self.records.remove(labels)

    def _append(
        self, doc_ids: list[Any], docs: TokenBatch, payloads: list[dict[str, Any] | None]
    ) -> None:
        for start in range(0, len(docs), _ADD_BATCH):
            stop = min(start + _ADD_BATCH, len(docs))
            part = docs.slice(start, stop)
            labels = self.records.new_labels(stop - start)
            fdes = self.encoder.encode_documents(part)
            part_ids, part_payloads = doc_ids[start:stop], payloads[start:stop]
            self.store.add(labels, fdes, part, part_ids, part_payloads)
            self.records.append(labels, part_ids, part_payloads)
