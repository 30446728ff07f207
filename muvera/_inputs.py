"""Turn the batch forms users pass (ragged list or padded array) into validated token chunks.

A batch is either a sequence of ``(n_i, d)`` arrays or a padded ``(n, T, d)`` array with
``lengths=`` or ``mask=``. Both numpy and torch are accepted; torch is only touched when
the user passes tensors. Items are checked lazily per chunk, so a huge batch never exists
as one float32 copy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import MuveraError

__all__ = ["Batch", "TokenChunk", "is_torch_tensor", "prepare_batch"]


def is_torch_tensor(obj: object) -> bool:
    """True for a ``torch.Tensor`` without importing torch."""
    return type(obj).__module__.startswith("torch") and hasattr(obj, "device")


@dataclasses.dataclass
class TokenChunk:
    """Items ``start .. start + len(lengths)`` of a batch, tokens concatenated.

    ``tokens`` is float32 ``(sum(lengths), d)`` (numpy array or torch tensor) and
    ``lengths`` int64 ``(n_items,)`` numpy.
    """

    start: int
    tokens: Any
    lengths: npt.NDArray[np.int64]


@dataclasses.dataclass
class Batch:
    """A validated batch: ``backend`` is "numpy" or "torch"; ``lengths`` tokens per item."""

    backend: str
    device: Any
    lengths: npt.NDArray[np.int64]
    _items: Sequence[Any] | None
    _padded: Any
    _mask: Any
    what: str

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def items(self) -> list[npt.NDArray[np.float32]]:
        """Every item as a validated float32 numpy array ``(n_i, d)`` (torch moved to CPU)."""
        out: list[npt.NDArray[np.float32]] = []
        for chunk in self.chunks(1 << 62):
            tokens = chunk.tokens
            if self.backend == "torch":
                tokens = tokens.detach().cpu().numpy()
            out.extend(
                np.split(np.asarray(tokens, dtype=np.float32), np.cumsum(chunk.lengths)[:-1])
            )
        return out

    def chunks(self, max_tokens: int) -> Iterator[TokenChunk]:
        """Yield consecutive chunks of whole items holding about ``max_tokens`` tokens."""
        n = len(self)
        start = 0
        cum = np.concatenate([[0], np.cumsum(self.lengths)])
        while start < n:
            stop = int(np.searchsorted(cum, cum[start] + max_tokens, side="right")) - 1
            stop = min(max(stop, start + 1), n)
            yield self._gather(start, stop)
            start = stop

    def _gather(self, start: int, stop: int) -> TokenChunk:
        lengths = self.lengths[start:stop]
        tokens: Any
        if self._items is not None:
            parts = [self._items[i] for i in range(start, stop)]
            if self.backend == "torch":
                import torch

                tokens = torch.cat([p.reshape(-1, p.shape[-1]) for p in parts]).float()
            else:
                tokens = np.concatenate(parts, axis=0).astype(np.float32, copy=False)
        else:
            padded = self._padded[start:stop]
            mask = self._mask[start:stop]
            tokens = padded[mask]
            tokens = tokens.float() if self.backend == "torch" else tokens.astype(np.float32)
        self._check_finite(tokens, start, lengths)
        return TokenChunk(start, tokens, lengths)

    def _check_finite(self, tokens: Any, start: int, lengths: npt.NDArray[np.int64]) -> None:
        if self.backend == "torch":
            import torch

            bad_rows = (~torch.isfinite(tokens).all(dim=1)).nonzero().flatten().cpu().numpy()
        else:
            if tokens.size == 0 or (np.isfinite(tokens.min()) and np.isfinite(tokens.max())):
                return  # NaN propagates through min/max, so this is an exact check
            bad_rows = np.flatnonzero(~np.isfinite(tokens).all(axis=1))
        if bad_rows.size:
            offsets = np.cumsum(lengths)
            item = start + int(np.searchsorted(offsets, bad_rows[0], side="right"))
            raise MuveraError(f"{self.what}: item {item} has NaN or infinite values")


def _float_dtype_ok(obj: Any, backend: str) -> bool:
    if backend == "torch":
        return bool(obj.dtype.is_floating_point)
    return bool(np.issubdtype(obj.dtype, np.floating))


def prepare_batch(
    batch: Any,
    dimension: int,
    *,
    lengths: Any = None,
    mask: Any = None,
    what: str = "batch",
) -> Batch:
    """Validate ``batch`` and describe it as a :class:`Batch`.

    Raises :class:`~muvera.MuveraError` naming the item index for a wrong token dimension,
    a non-float dtype, a bad ``lengths``/``mask``; NaN/inf are reported when chunks are read.
    """
    if is_torch_tensor(batch) or isinstance(batch, np.ndarray):
        return _prepare_padded(batch, dimension, lengths, mask, what)
    if lengths is not None or mask is not None:
        raise MuveraError(f"{what}: lengths= and mask= apply only to a padded (n, T, d) array")
    if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence):
        raise MuveraError(
            f"{what}: expected a list of (n_tokens, {dimension}) arrays or a padded "
            f"(n, T, {dimension}) array, got {type(batch).__name__}"
        )
    items = list(batch)
    backend = "torch" if items and is_torch_tensor(items[0]) else "numpy"
    device = items[0].device if backend == "torch" else None
    lens = np.zeros(len(items), dtype=np.int64)
    for i, item in enumerate(items):
        if backend == "torch":
            if not is_torch_tensor(item):
                raise MuveraError(f"{what}: item {i} is not a torch tensor but item 0 is")
            if item.device != device:
                raise MuveraError(f"{what}: item {i} is on {item.device}, item 0 on {device}")
        else:
            if is_torch_tensor(item):
                raise MuveraError(f"{what}: item {i} is a torch tensor but item 0 is not")
            try:
                item = np.asarray(item)
            except (TypeError, ValueError) as exc:
                raise MuveraError(f"{what}: item {i} is not array-like ({exc})") from None
            items[i] = item
        if item.ndim != 2:
            raise MuveraError(
                f"{what}: item {i} must be 2-D (n_tokens, {dimension}), "
                f"got shape {tuple(item.shape)}"
            )
        if item.shape[1] != dimension:
            raise MuveraError(
                f"{what}: item {i} has token dimension {item.shape[1]}, expected {dimension}"
            )
        if not _float_dtype_ok(item, backend):
            raise MuveraError(f"{what}: item {i} has dtype {item.dtype}, expected a float dtype")
        lens[i] = item.shape[0]
    return Batch(backend, device, lens, items, None, None, what)


def _prepare_padded(batch: Any, dimension: int, lengths: Any, mask: Any, what: str) -> Batch:
    backend = "torch" if is_torch_tensor(batch) else "numpy"
    shape = tuple(batch.shape)
    if len(shape) == 2:
        raise MuveraError(
            f"{what}: got one 2-D array of shape {shape}; pass a list of items ([tokens]) or a "
            f"padded (n, T, {dimension}) array"
        )
    if len(shape) != 3:
        raise MuveraError(f"{what}: a padded batch must be 3-D (n, T, d), got shape {shape}")
    n, T, d = shape
    if d != dimension:
        raise MuveraError(f"{what}: token dimension is {d}, expected {dimension}")
    if not _float_dtype_ok(batch, backend):
        raise MuveraError(f"{what}: dtype {batch.dtype} is not a float dtype")
    if lengths is not None and mask is not None:
        raise MuveraError(f"{what}: pass lengths= or mask=, not both")
    if mask is not None:
        mask_np = mask.detach().cpu().numpy() if is_torch_tensor(mask) else np.asarray(mask)
        if mask_np.shape != (n, T):
            raise MuveraError(f"{what}: mask has shape {mask_np.shape}, expected {(n, T)}")
        if mask_np.dtype != np.bool_:
            if not np.all((mask_np == 0) | (mask_np == 1)):
                raise MuveraError(f"{what}: mask must be boolean or 0/1")
            mask_np = mask_np.astype(bool)
        lens = mask_np.sum(axis=1).astype(np.int64)
    else:
        if lengths is None:
            lens = np.full(n, T, dtype=np.int64)
        else:
            raw = (
                lengths.detach().cpu().numpy() if is_torch_tensor(lengths) else np.asarray(lengths)
            )
            if raw.shape != (n,):
                raise MuveraError(f"{what}: lengths has shape {raw.shape}, expected {(n,)}")
            if not np.issubdtype(raw.dtype, np.integer):
                raise MuveraError(f"{what}: lengths must be integers, got dtype {raw.dtype}")
            lens = raw.astype(np.int64)
            bad = np.flatnonzero((lens < 0) | (lens > T))
            if bad.size:
                i = int(bad[0])
                raise MuveraError(
                    f"{what}: item {i} has length {int(lens[i])}, "
                    f"outside [0, {T}] (the padded length)"
                )
        mask_np = np.arange(T)[None, :] < lens[:, None]
    if backend == "torch":
        import torch

        mask_obj: Any = torch.from_numpy(mask_np).to(batch.device)
        device = batch.device
    else:
        mask_obj, device = mask_np, None
    return Batch(backend, device, lens, None, batch, mask_obj, what)
