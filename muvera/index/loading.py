"""Reading one committed generation of an index folder, whole, while writers may commit."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MuveraError
from ..fde import FDEEncoder
from ..fde.calibration import CalibratedEncoder
from ..stores import Store, store_class
from . import manifest as mf
from .calibrating import encoder_for
from .checksums import verify_checksums
from .records import Records

__all__ = ["load_generation"]

ATTEMPTS = 5  # generations an open may skip while writers commit
_DAMAGE = (OSError, ValueError, KeyError, TypeError, IndexError, EOFError,
           zipfile.BadZipFile, struct.error, RecursionError)  # fmt: skip


def load_generation(
    path: Path, overrides: dict[str, Any], verify: bool = False
) -> tuple[dict[str, Any], FDEEncoder | CalibratedEncoder, Store, Records]:
    """The manifest, encoder, store and records of the committed generation.

    A writer may commit meanwhile and delete the files of the generation being read: the
    newer generation is then read instead (up to ``ATTEMPTS`` times). Once loaded, the
    generation stays readable (its token and graph files are memory-mapped, the rest is
    read), whatever writers do. Whatever is wrong in the files becomes a MuveraError
    naming the index. ``verify``: every file is checked against the manifest's checksums
    first.
    """
    for attempt in range(ATTEMPTS):
        manifest = mf.read_manifest(path)
        try:
            if verify:
                verify_checksums(path, manifest)
            return _load_files(path, manifest, overrides)
        except (MuveraError, *_DAMAGE) as exc:
            if attempt + 1 < ATTEMPTS and _committed_since(path, manifest):
                continue
            if isinstance(exc, MuveraError):
                raise
            raise MuveraError(f"index {path} is damaged ({type(exc).__name__}: {exc})") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _committed_since(path: Path, manifest: dict[str, Any]) -> bool:
    """Whether the manifest on disk is of another generation than ``manifest``."""
    try:
        return bool(mf.read_manifest(path)["generation"] != manifest["generation"])
    except MuveraError:
        return False


def _load_files(
    path: Path, manifest: dict[str, Any], overrides: dict[str, Any]
) -> tuple[dict[str, Any], FDEEncoder | CalibratedEncoder, Store, Records]:
    plain = FDEEncoder.load(path / manifest["encoder"])
    config, fde_dimension = plain.config, int(manifest["fde_dimension"])
    if (config.dimension, plain.output_dimension) != (manifest["token_dimension"], fde_dimension):
        raise MuveraError(
            f"index {path}: its encoder ({config.dimension}-d tokens, "
            f"{plain.output_dimension}-d FDEs) does not match its manifest "
            f"({manifest['token_dimension']}-d, {fde_dimension}-d)"
        )
    encoder = encoder_for(manifest.get("calibration"), plain, path)
    arrays = mf.read_state(path, manifest)
    store = store_class(manifest["store"]["kind"]).open(path, manifest, arrays, overrides)
    alive = np.asarray(arrays.get("alive", np.zeros(0)), dtype=bool)
    records = Records(path, manifest["records"], manifest["next_label"], manifest["id_type"], alive)
    return manifest, encoder, store, records
