"""The index folder's format: the manifest, its commit, the writer lock.

An index directory is self-describing and written atomically::

    manifest.json          format and library versions, store parameters, committed sizes,
                           optional CRC-32 checksums of the other files (checksums.py)
    encoder.npz            the FDE encoder (config + matrices): queries encode identically
    records.jsonl          one line per added document: label, id, payload (append-only)
    state-<gen>.npz        per label: alive flag (+ the store's arrays: token spans)
    tokens.bin             local stores: token vectors, ragged, append-only
    cells.bin, centroids.bin  local stores: token cells (muvera.stores.cell_file)
    <store files>          e.g. hnsw-<gen>.bin (+ hnsw-<gen>.codes), exact-<gen>.npz
    .lock                  held by the one writer

Every change ends by replacing ``manifest.json`` in one ``os.replace``. Append-only files
are only trusted up to the sizes the manifest records, and a generation's files are
deleted only after the next manifest is in place (and ``GRACE_S`` seconds later, for the
readers opening it meanwhile), so an interrupted write or a crash leaves the previous
index complete and readable.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._version import __version__
from ..errors import MuveraError
from ..files import atomic_write_bytes, atomic_write_json, check_format
from .checksums import check_checksums

__all__ = [
    "CALIBRATED_FORMAT_VERSION",
    "CELLS_FORMAT_VERSION",
    "CELL_COUNT_FORMAT_VERSION",
    "FORMAT",
    "FORMAT_VERSION",
    "LINKS_FORMAT_VERSION",
    "LLOYD_MAX_FORMAT_VERSION",
    "QUANTIZED_FORMAT_VERSION",
    "RESIDUAL_FORMAT_VERSION",
    "SEGMENTS_FORMAT_VERSION",
    "Lock",
    "check_manifest",
    "file_name",
    "generation_files",
    "new_manifest",
    "read_manifest",
    "read_state",
    "reader_version",
    "remove_created",
    "remove_stale",
    "write_state",
]

FORMAT = "muvera.Index"
FORMAT_VERSION = 10  # 2: records.jsonl may hold payload updates; 3: a calibration section
# of kind "centre"; 4: quantized token codes (token dtype int8/int4); 5: fitted token cells
# (cells.bin + centroids.bin); 6: token dtype residual4 (int4 rows of residuals from the
# cells' centroids from the token section's "residual_from" row on); 7: hnswlib graph
# segments (the store entry's "segments") or deleted rows its graph files do not mark
# ("unmarked": the live labels say it; muvera.stores.hnsw_parts); 8: hnswlib graph files
# without their vectors (the entry's "graph_vectors": false; muvera.stores.hnsw_links,
# versioned in their own header), or token dtype residual2; 9: token cells not fitted yet
# with a count asked for (the cells section {"count": n}); 10: token dtype residual4lm
# (residual4's nibbles decoding to Lloyd-Max levels, muvera.token_codes). Each is written only
# by indexes that use it: others keep version 1, readable by older versions. The hnswlib
# store's persisted FDE codes need no version: an older reader ignores them and quantizes
# at open; an older writer's entry drops them, and the next writer that knows them writes
# them again. They are one hnsw-<gen>.codes file per graph file (the entry's and each
# segment's "codes_file"; muvera.stores.hnsw_codes, versioned in its header); indexes
# written before hold them in fde-codes.bin + fde-scales.bin (the entry's "codes"), read
# until their next commit replaces them.
CALIBRATED_FORMAT_VERSION = 3
QUANTIZED_FORMAT_VERSION = 4
CELLS_FORMAT_VERSION = 5
RESIDUAL_FORMAT_VERSION = 6
SEGMENTS_FORMAT_VERSION = 7
LINKS_FORMAT_VERSION = 8
CELL_COUNT_FORMAT_VERSION = 9
LLOYD_MAX_FORMAT_VERSION = 10
MANIFEST = "manifest.json"
# Seconds a writer keeps the files of a superseded generation (readers that read the older
# manifest open them meanwhile; see Index._retire).
GRACE_S = 2.0


class Lock:
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


def new_manifest(
    encoder: Any, kind: str, options: dict[str, Any], metadata: dict[str, Any]
) -> dict[str, Any]:
    """The manifest of an empty index (generation 0; the store's sections are filled by
    the first commit)."""
    return {
        "format": FORMAT,
        "format_version": 1,  # 2 once records.jsonl holds a payload update
        "library_version": __version__,
        "generation": 0,
        "token_dimension": encoder.config.dimension,
        "fde_dimension": encoder.output_dimension,
        "encoder": "encoder.npz",
        "store": {"kind": kind, "options": options, "entry": None},
        "tokens": {},
        "records": {"file": "records.jsonl", "bytes": 0},
        "state": None,
        "next_label": 0,
        "id_type": None,
        "metadata": metadata,
    }


def read_manifest(directory: Path) -> dict[str, Any]:
    """The committed manifest: format and version, every field's type and range, and every
    file name it holds confined to ``directory`` (see :func:`check_manifest`)."""
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(), parse_constant=_reject_constant)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MuveraError(f"cannot read {path} ({exc})") from None
    check_format(manifest, FORMAT, FORMAT_VERSION, f"index {directory}", "a muvera index")
    check_manifest(directory, manifest)
    return dict(manifest)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _field(manifest: dict[str, Any], key: str, kind: Any, where: str) -> Any:
    value = manifest.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise MuveraError(f"{where}: field {key!r} is {value!r}")
    if isinstance(value, int) and value < 0:
        raise MuveraError(f"{where}: field {key!r} is negative ({value})")
    return value


def file_name(directory: Path, name: Any, what: str) -> str:
    """``name`` if it names a file directly inside ``directory`` (no separator, no ``..``,
    not absolute, not a link leading out of it), else a MuveraError: an index folder can
    come from anyone, and its manifest must not make a commit write or delete elsewhere."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or any(c in name for c in ("/", "\\", "\x00"))
        or os.path.isabs(name)
    ):
        raise MuveraError(
            f"{directory / MANIFEST}: {what} {name!r} is not a file name of the index"
        )
    path = directory / name
    if path.is_symlink() and path.resolve().parent != directory.resolve():
        raise MuveraError(f"{directory / MANIFEST}: {what} {name!r} links out of the index folder")
    return name


def check_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Types and ranges of every field, and the file names confined to the folder."""
    where = str(directory / MANIFEST)
    for key in ("generation", "token_dimension", "fde_dimension", "next_label"):
        _field(manifest, key, int, where)
    if manifest["token_dimension"] < 1 or manifest["fde_dimension"] < 1:
        raise MuveraError(f"{where}: dimensions must be positive")
    if manifest.get("id_type") not in (None, "int", "str"):
        raise MuveraError(f"{where}: field 'id_type' is {manifest.get('id_type')!r}")
    file_name(directory, manifest.get("encoder"), "the encoder file")
    records = _field(manifest, "records", dict, where)
    file_name(directory, records.get("file"), "the records file")
    _field(records, "bytes", int, where)
    tokens = _field(manifest, "tokens", dict, where)
    if tokens.get("file") is not None:
        file_name(directory, tokens["file"], "the token file")
    if "bytes" in tokens:
        _field(tokens, "bytes", int, where)
    cells = tokens.get("cells")
    if cells is not None and not isinstance(cells, dict):
        raise MuveraError(f"{where}: the token cells section is malformed")
    if cells and set(cells) != {"count"}:  # {"count": n}: not fitted yet (cell_file checks n)
        file_name(directory, cells.get("file"), "the token cells' code file")
        file_name(directory, cells.get("centroids"), "the token cells' centroid file")
    if manifest.get("state") is not None:
        file_name(directory, manifest["state"], "the state file")
    store = _field(manifest, "store", dict, where)
    if not isinstance(store.get("kind"), str) or not isinstance(store.get("options", {}), dict):
        raise MuveraError(f"{where}: the store section is malformed")
    entry = store.get("entry")
    if entry is not None and not isinstance(entry, dict):
        raise MuveraError(f"{where}: the store entry is malformed")
    for key in ("file", "state"):
        if entry and entry.get(key) is not None:
            file_name(directory, entry[key], f"the store's {key}")
    segments = (entry or {}).get("segments", [])
    if not isinstance(segments, list) or not all(isinstance(x, dict) for x in segments):
        raise MuveraError(f"{where}: the store's segments section is malformed")
    for segment in segments:
        file_name(directory, segment.get("file"), "the store's graph segment")
        if segment.get("codes_file") is not None:
            file_name(directory, segment["codes_file"], "the store's graph codes")
    if entry and entry.get("codes_file") is not None:
        file_name(directory, entry["codes_file"], "the store's graph codes")
    codes = (entry or {}).get("codes")
    if codes is not None and not isinstance(codes, dict):
        raise MuveraError(f"{where}: the store's FDE codes section is malformed")
    for key in ("file", "scales"):
        if codes and codes.get(key) is not None:
            file_name(directory, codes[key], "the store's FDE codes")
    if not isinstance(manifest.get("metadata", {}), dict):
        raise MuveraError(f"{where}: field 'metadata' is not a dict")
    if "checksums" in manifest:
        check_checksums(where, manifest["checksums"])


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Commit: replace the manifest atomically (synced file, then ``os.replace``)."""
    atomic_write_json(directory / MANIFEST, manifest)


def read_state(directory: Path, manifest: dict[str, Any]) -> dict[str, npt.NDArray[Any]]:
    """The arrays of the generation's state file (none before the first commit)."""
    if not manifest.get("state"):
        return {}
    with np.load(directory / manifest["state"], allow_pickle=False) as state:
        return {name: state[name] for name in state.files}


def write_state(directory: Path, generation: int, arrays: dict[str, npt.NDArray[Any]]) -> str:
    """Write ``state-<generation>.npz`` atomically; returns its name."""
    name = f"state-{generation:06d}.npz"
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    atomic_write_bytes(directory / name, buffer.getvalue())
    return name


STALE_PATTERNS = (
    "state-*.npz", "hnsw-*.bin", "hnsw-*.codes", "exact-*.npz", "tokens-*.bin", "cells*.bin",
    "centroids.bin", "fde-*.bin", ".*.tmp",
)  # fmt: skip


def remove_stale(directory: Path, manifest: dict[str, Any]) -> list[str]:
    """Delete what a crash left behind (files of older generations, a half-done
    compaction, temporary files of interrupted writes); the writer calls this when it
    opens, holding the lock. Returns the names removed."""
    keep = generation_files(manifest) | {manifest["encoder"], MANIFEST}
    removed = []
    for pattern in STALE_PATTERNS:
        for path in directory.glob(pattern):
            if path.name not in keep and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path.name)
    return sorted(removed)


def remove_created(path: Path, made: bool) -> None:
    """Undo a failed :meth:`Index.create`: the folder it made, or what it wrote into the
    empty folder it was given."""
    if made:
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def generation_files(manifest: dict[str, Any]) -> set[str]:
    """The files a manifest refers to (those of an older one that it does not are deleted
    once it is committed)."""
    files = {manifest["records"]["file"]}
    tokens = manifest.get("tokens") or {}
    if tokens.get("file"):
        files.add(tokens["file"])
    for key in ("file", "centroids"):
        if isinstance((tokens.get("cells") or {}).get(key), str):
            files.add(tokens["cells"][key])
    if manifest.get("state"):
        files.add(manifest["state"])
    entry = manifest["store"].get("entry") or {}
    for key in ("file", "state", "codes_file"):
        if isinstance(entry.get(key), str):
            files.add(entry[key])
    for key in ("file", "scales"):
        if isinstance((entry.get("codes") or {}).get(key), str):
            files.add(entry["codes"][key])
    segments = entry.get("segments")
    for segment in segments if isinstance(segments, list) else []:
        for key in ("file", "codes_file"):
            if isinstance(segment, dict) and isinstance(segment.get(key), str):
                files.add(segment[key])
    return files


def reader_version(manifest: dict[str, Any], token_dtype: Any, updated: bool) -> int:
    """The oldest format version that can read the index: each feature raises it only where
    it is used (see :data:`FORMAT_VERSION`). ``updated``: records.jsonl holds payload
    updates."""
    version = int(manifest["format_version"])
    if updated:
        version = max(version, 2)
    if (manifest.get("calibration") or {}).get("kind") == "centre":
        version = max(version, CALIBRATED_FORMAT_VERSION)
    if token_dtype in ("int8", "int4", "residual4", "residual2", "residual4lm"):
        version = max(version, QUANTIZED_FORMAT_VERSION)
    if token_dtype in ("residual4", "residual2", "residual4lm"):
        version = max(version, RESIDUAL_FORMAT_VERSION)
    if token_dtype == "residual2":
        version = max(version, LINKS_FORMAT_VERSION)
    if token_dtype == "residual4lm":
        version = max(version, LLOYD_MAX_FORMAT_VERSION)
    if cells := (manifest.get("tokens") or {}).get("cells"):  # a count: not fitted yet
        counted = "count" in cells
        version = max(version, CELL_COUNT_FORMAT_VERSION if counted else CELLS_FORMAT_VERSION)
    entry = manifest["store"].get("entry") or {}
    if entry.get("segments") or entry.get("unmarked"):
        version = max(version, SEGMENTS_FORMAT_VERSION)
    if entry.get("graph_vectors") is False:
        version = max(version, LINKS_FORMAT_VERSION)
    return version
