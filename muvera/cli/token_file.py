"""``muvera add INDEX tokens.npz``: precomputed token vectors (``muvera encode``'s .npz:
``ids``, ``lengths``, ``tokens``) added in chunks, read from the archive as a stream, so
memory holds one chunk whatever the corpus size (plain or compressed .npz alike).

Everything is checked before anything is written: the members and their dtypes, shapes
and agreement (lengths sum to the token rows, one id per document, the index's token
dimension). A file from elsewhere gives a MuveraError, never a crash or a pickle load.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from ..errors import MuveraError

__all__ = ["read_token_file"]


def _header(fh: IO[bytes], what: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise MuveraError(f"{what} is not a .npy array ({exc})") from None
    return shape, fortran, dtype


def _small(archive: zipfile.ZipFile, name: str, path: Path) -> npt.NDArray[Any]:
    try:
        with archive.open(name) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    except KeyError:
        raise MuveraError(f"{path} has no {name!r} (write it with `muvera encode`)") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise MuveraError(f"{path}: cannot read {name} ({exc})") from None


def read_token_file(
    path: Path, dimension: int, chunk: int
) -> tuple[list[Any], Iterator[tuple[list[Any], list[npt.NDArray[np.float32]]]]]:
    """The ids of ``path`` and an iterator of ``(ids, token matrices)`` chunks of at most
    ``chunk`` documents, read from the archive as it goes (float32 ``(n_i, dimension)``)."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise MuveraError(f"cannot read {path} as .npz ({exc})") from None
    ids_array = _small(archive, "ids.npy", path)
    lengths = _small(archive, "lengths.npy", path)
    if ids_array.ndim != 1 or ids_array.dtype.kind not in "iuU":
        raise MuveraError(f"{path}: ids must be a 1-D array of ints or strings")
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or (lengths < 0).any():
        raise MuveraError(f"{path}: lengths must be a 1-D array of token counts >= 0")
    if lengths.shape != ids_array.shape:
        raise MuveraError(f"{path}: {ids_array.size} ids but {lengths.size} lengths")
    try:
        fh = archive.open("tokens.npy")
    except KeyError:
        raise MuveraError(f"{path} has no 'tokens.npy' (write it with `muvera encode`)") from None
    shape, fortran, dtype = _header(fh, f"{path}: tokens")
    rows = int(lengths.sum())
    if dtype not in (np.dtype("<f4"), np.dtype("<f2")) or fortran:
        raise MuveraError(f"{path}: tokens must be C-order float32 or float16, not {dtype}")
    if shape != (rows, dimension):
        raise MuveraError(
            f"{path}: tokens are {shape}; the lengths and the index need ({rows}, {dimension})"
        )
    ids = ids_array.tolist()

    def chunks() -> Iterator[tuple[list[Any], list[npt.NDArray[np.float32]]]]:
        with archive, fh:
            for start in range(0, len(ids), chunk):
                part = lengths[start : start + chunk]
                n = int(part.sum())
                data = fh.read(n * dimension * dtype.itemsize)
                if len(data) != n * dimension * dtype.itemsize:
                    raise MuveraError(f"{path}: tokens end early")
                block = np.frombuffer(data, dtype=dtype).reshape(n, dimension)
                bounds = np.cumsum(part)[:-1]
                yield ids[start : start + chunk], np.split(block.astype(np.float32), bounds)

    return ids, chunks()
