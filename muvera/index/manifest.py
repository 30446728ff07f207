"""The index folder's format: the manifest, its commit, the writer lock.

An index directory is self-describing and written atomically::

    manifest.json          format and library versions, store parameters, committed sizes
    encoder.npz            the FDE encoder (config + matrices): queries encode identically
    records.jsonl          one line per added document: label, id, payload (append-only)
    state-<gen>.npz        per label: alive flag (+ the store's arrays: token spans)
    tokens.bin             local stores: token vectors, ragged, append-only
    <store files>          e.g. hnsw-<gen>.bin, exact-<gen>.npz
    .lock                  held by the one writer

Every change ends by replacing ``manifest.json`` in one ``os.replace``. Append-only files
are only trusted up to the sizes the manifest records, and a generation's files are
deleted only after the next manifest is in place, so an interrupted write or a crash
leaves the previous index complete and readable.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._version import __version__
from ..errors import MuveraError
from ..files import atomic_write_bytes, atomic_write_json, check_format

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Lock",
    "generation_files",
    "new_manifest",
    "read_manifest",
    "read_state",
    "write_state",
]

FORMAT = "muvera.Index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


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
        "format_version": FORMAT_VERSION,
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
    """The committed manifest, format and version checked."""
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MuveraError(f"cannot read {path} ({exc})") from None
    check_format(manifest, FORMAT, FORMAT_VERSION, f"index {directory}", "a muvera index")
    return dict(manifest)


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


def generation_files(manifest: dict[str, Any]) -> set[str]:
    """The files a manifest refers to (those of an older one that it does not are deleted
    once it is committed)."""
    files = {manifest["records"]["file"]}
    if (manifest.get("tokens") or {}).get("file"):
        files.add(manifest["tokens"]["file"])
    if manifest.get("state"):
        files.add(manifest["state"])
    entry = manifest["store"].get("entry") or {}
    for key in ("file", "state"):
        if isinstance(entry.get(key), str):
            files.add(entry[key])
    return files
