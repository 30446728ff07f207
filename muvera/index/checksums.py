"""Optional per-file checksums: CRC-32 of every file a generation refers to, in the manifest.

An index created with ``checksums=True`` records ``"checksums": {name: [bytes, crc32]}`` at
every commit; ``Index.open(..., verify=True)`` and :meth:`muvera.Index.verify` read every
file back and compare. Append-only files (``records.jsonl``, ``tokens.bin``) are covered up
to the size the manifest commits, and their CRC is carried forward over the bytes a commit
appended, so a commit costs what it wrote (plus the whole of any file it rewrote, e.g. an
hnswlib graph). Verifying reads every byte once (``benchmarks/bench_checksums.py`` measures
both costs). CRC-32 finds damage (disk, copy, truncation),
not tampering: whoever can edit the files can edit the checksums too.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from ..errors import MuveraError

__all__ = ["check_checksums", "compute_checksums", "verify_checksums"]

_CHUNK = 1 << 24  # bytes read at a time


def _crc(path: Path, start: int, stop: int, crc: int) -> int:
    """CRC-32 of bytes ``start .. stop`` of ``path``, continuing ``crc``."""
    if stop <= start:  # nothing to read (an append-only file may not exist yet)
        return crc
    with path.open("rb") as fh:
        fh.seek(start)
        left = stop - start
        while left > 0:
            chunk = fh.read(min(_CHUNK, left))
            if not chunk:
                raise MuveraError(f"{path.name} is shorter than the {stop} bytes committed")
            crc = zlib.crc32(chunk, crc)
            left -= len(chunk)
    return crc


def _covered(directory: Path, manifest: dict[str, Any]) -> dict[str, int]:
    """Each file of the generation and how many of its bytes the commit covers."""
    from .manifest import generation_files

    sizes = {manifest["records"]["file"]: int(manifest["records"]["bytes"])}
    tokens = manifest.get("tokens") or {}
    if tokens.get("file"):
        sizes[tokens["file"]] = int(tokens.get("bytes", 0))
    cells = tokens.get("cells") or {}
    if cells.get("file"):
        sizes[cells["file"]] = int(cells.get("bytes", 0))
    codes = (manifest["store"].get("entry") or {}).get("codes") or {}
    if codes.get("file"):
        rows = int(codes.get("rows", 0))
        sizes[codes["file"]] = rows * int(manifest.get("fde_dimension", 0))
        sizes[str(codes.get("scales"))] = rows * 8
    for name in generation_files(manifest) | {manifest["encoder"]}:
        if name not in sizes:
            path = directory / name
            sizes[name] = path.stat().st_size if path.is_file() else 0
    return sizes


def compute_checksums(
    directory: Path, manifest: dict[str, Any], previous: dict[str, Any] | None
) -> dict[str, list[int]]:
    """``{name: [bytes, crc32]}`` for the files of ``manifest``: carried forward from
    ``previous`` (the last commit's) over appended bytes, reused for unchanged files."""
    previous = previous or {}
    out: dict[str, list[int]] = {}
    tokens = manifest.get("tokens") or {}
    codes = (manifest["store"].get("entry") or {}).get("codes") or {}
    appendable = {
        manifest["records"]["file"],
        tokens.get("file"),
        (tokens.get("cells") or {}).get("file"),
        codes.get("file"),
        codes.get("scales"),
    }
    for name, size in _covered(directory, manifest).items():
        old = previous.get(name)
        if old is not None and old[0] == size and name not in appendable:
            out[name] = list(old)  # a file of a committed generation does not change
        elif old is not None and name in appendable and old[0] <= size:
            out[name] = [size, _crc(directory / name, old[0], size, old[1])]
        else:
            out[name] = [size, _crc(directory / name, 0, size, 0)]
    return out


def check_checksums(where: str, value: Any) -> None:
    """The manifest's ``checksums`` field: ``{name: [bytes >= 0, 0 <= crc32 < 2**32]}``."""
    if not isinstance(value, dict):
        raise MuveraError(f"{where}: field 'checksums' is not a dict")
    for name, pair in value.items():
        if not (
            isinstance(name, str)
            and isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in pair)
            and pair[0] >= 0
            and 0 <= pair[1] < 1 << 32
        ):
            raise MuveraError(f"{where}: checksum of {name!r} is {pair!r}, not [bytes, crc32]")


def verify_checksums(directory: Path, manifest: dict[str, Any]) -> None:
    """Read every file of the generation and compare with the manifest's checksums; a
    MuveraError names the first file that differs (or that has none recorded)."""
    recorded = manifest.get("checksums")
    if recorded is None:
        raise MuveraError(f"index {directory} records no checksums (create it with checksums=True)")
    for name, size in sorted(_covered(directory, manifest).items()):
        if name not in recorded:
            raise MuveraError(f"index {directory}: no checksum recorded for {name}")
        want_size, want = recorded[name]
        if want_size != size:
            raise MuveraError(
                f"index {directory}: {name} covers {size} bytes, its checksum {want_size}"
            )
        path = directory / name
        if size and not path.is_file():
            raise MuveraError(
                f"index {directory}: {name} is missing (a reader: a later commit may have "
                "removed it; refresh() first)"
            )
        if _crc(path, 0, size, 0) != want:
            raise MuveraError(f"index {directory}: {name} is damaged (checksum mismatch)")
