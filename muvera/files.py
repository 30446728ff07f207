"""Append-only files with a committed length, and atomic small-file writes.

An index commits by atomically replacing its manifest, which records how many bytes of
each append-only file are valid. Bytes past that (an interrupted append) are ignored when
reading and cut off before the next append, so a crash never corrupts committed data.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "AppendOnlyFile",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_format",
    "fsync_directory",
]


def check_format(meta: Any, expected: str, max_version: int, where: str, what: str) -> None:
    """Raise :class:`~muvera.MuveraError` unless ``meta`` is a ``expected`` header this
    library can read (``where`` names the file, ``what`` the kind of thing it should be)."""
    from ._version import __version__
    from .errors import MuveraError

    if not isinstance(meta, dict) or meta.get("format") != expected:
        raise MuveraError(f"{where} is not {what}")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > max_version:
        raise MuveraError(
            f"{where} has format version {version} (written by muvera "
            f"{meta.get('library_version')}); this muvera ({__version__}) reads up to "
            f"{max_version}: upgrade muvera"
        )


def fsync_directory(directory: Path) -> None:
    """Persist a rename in ``directory`` (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=1)
def file_mode() -> int:
    """The mode a new file gets under this process's umask (0644 for the usual 022); read
    once (setting the umask to read it is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a synced temp file and ``os.replace``; the file gets
    the umask's mode, as any new file would (not mkstemp's 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


class AppendOnlyFile:
    """A file that only grows; ``committed`` bytes of it are valid.

    Nothing is created before the first :meth:`append` (a reader never writes). With
    ``map_now`` the committed bytes are memory-mapped at once: the mapping keeps the file's
    data readable even after a writer's compaction replaces and deletes the file.
    """

    def __init__(self, path: Path, committed: int, *, map_now: bool = False) -> None:
        self.path = path
        self.committed = committed
        self._map: npt.NDArray[np.uint8] | None = None
        if committed == 0:
            return
        size = path.stat().st_size
        if size < committed:
            raise OSError(f"{path} holds {size} bytes, the manifest commits {committed}")
        if map_now:
            self.view(np.uint8)

    def append(self, data: bytes) -> int:
        """Write ``data`` after the committed bytes (cutting any uncommitted tail) and sync.

        Returns the offset written at; the caller commits ``offset + len(data)``.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
        with os.fdopen(fd, "r+b") as fh:
            fh.truncate(self.committed)
            fh.seek(self.committed)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self._map = None
        return self.committed

    def view(self, dtype: Any) -> npt.NDArray[Any]:
        """The committed bytes as a read-only memory map of ``dtype`` (empty when none)."""
        if self.committed == 0:
            return np.zeros(0, dtype=dtype)
        if self._map is None or self._map.size < self.committed:
            # a plain ndarray view of the map: slicing it skips np.memmap's per-slice
            # Python bookkeeping (measurable when re-ranking reads 100 slices per query)
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r").view(np.ndarray)
        return self._map[: self.committed].view(dtype)

    def read_bytes(self, start: int = 0, stop: int | None = None) -> bytes:
        stop = self.committed if stop is None else stop
        if stop <= start:
            return b""
        with self.path.open("rb") as fh:
            fh.seek(start)
            return fh.read(stop - start)
