"""The exact store: brute-force inner products over every FDE (ground truth, small corpora)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ..errors import MuveraError
from ..files import AppendOnlyFile, atomic_write_bytes
from .base import Labels, pad_topk
from .local import LocalStore

__all__ = ["ExactStore"]


class ExactStore(LocalStore):
    """FDE rows in an append-only float32 file, scored against every query in one product;
    labels and deletion marks in ``exact-<generation>.npz``."""

    kind: ClassVar[str] = "exact"

    def __init__(
        self,
        directory: Path,
        fde_dimension: int,
        token_dimension: int,
        tokens: dict[str, Any],
        arrays: dict[str, npt.NDArray[Any]],
        entry: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(directory, fde_dimension, token_dimension, tokens, arrays)
        entry = entry or {}
        self.file = AppendOnlyFile(
            directory / entry.get("file", "fdes.f32"), int(entry.get("bytes", 0)), map_now=True
        )
        rows = self.file.committed // (4 * fde_dimension)
        self.labels = np.zeros(0, dtype=np.int64)
        self.alive = np.zeros(0, dtype=bool)
        if entry.get("state"):
            with np.load(directory / entry["state"], allow_pickle=False) as state:
                self.labels, self.alive = (
                    state["labels"].astype(np.int64),
                    state["alive"].astype(bool),
                )
        if self.labels.size != rows:
            raise MuveraError(f"exact store: {rows} FDE rows but {self.labels.size} labels")

    def __len__(self) -> int:
        return int(self.alive.sum())

    def _add_fdes(self, labels: Labels, fdes: npt.NDArray[np.float32]) -> None:
        if self.labels.size and labels.size and labels.min() <= self.labels[-1]:
            raise MuveraError("exact store: labels must increase")
        start = self.file.append(np.ascontiguousarray(fdes, dtype=np.float32).tobytes())
        self.file.committed = start + fdes.size * 4
        self.labels = np.concatenate([self.labels, labels.astype(np.int64)])
        self.alive = np.concatenate([self.alive, np.ones(labels.size, dtype=bool)])

    def _delete_fdes(self, labels: Labels) -> None:
        self.alive[np.searchsorted(self.labels, labels)] = False

    def _candidates(
        self,
        q_fdes: npt.NDArray[np.float32],
        n: int,
        exact: bool,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[Labels, npt.NDArray[np.float32]]:
        del exact  # always exact
        matrix = self.file.view(np.float32).reshape(-1, self.fde_dimension)
        keep = self.alive
        if allowed is not None:
            inside = self.labels < allowed.size
            keep = keep & inside & allowed[np.where(inside, self.labels, 0)]
        live = np.flatnonzero(keep)
        scores = q_fdes @ (matrix if live.size == self.alive.size else matrix[live]).T
        return pad_topk(np.asarray(scores, dtype=np.float32), self.labels[live], n)

    def _save_fdes(self, directory: Path, generation: int) -> dict[str, Any]:
        name = f"exact-{generation:06d}.npz"
        buffer = io.BytesIO()
        np.savez(buffer, labels=self.labels, alive=self.alive)
        atomic_write_bytes(directory / name, buffer.getvalue())
        return {"file": self.file.path.name, "bytes": self.file.committed, "state": name}
