"""Multi-vector batches: the forms users pass, checked once, then one validated type.

A batch is a sequence of ``(n_i, d)`` arrays, a padded ``(n, T, d)`` array with
``lengths=`` or ``mask=``, or a :class:`TokenBatch` (already validated: taken as it is).
numpy and torch are accepted; torch is only touched when the user passes tensors.
:func:`prepare_batch` checks shapes and dtypes at once and returns a :class:`Batch`, whose
:meth:`Batch.chunks` yield :class:`TokenBatch` es (tokens concatenated, finiteness
checked), so a huge batch never exists as one float32 copy; the encoder, the token store
and the re-rank all take a :class:`TokenBatch` without splitting it again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import MuveraError

__all__ = ["Batch", "TokenBatch", "checked_batch", "is_torch_tensor", "prepare_batch"]


def is_torch_tensor(obj: object) -> bool:
    """True for a ``torch.Tensor`` without importing torch."""
    return type(obj).__module__.startswith("torch") and hasattr(obj, "device")


@dataclasses.dataclass(frozen=True)
class TokenBatch:
    """Validated items, tokens concatenated: item ``i`` is rows ``offsets[i] ..
    offsets[i+1]`` of ``tokens``.

    ``tokens`` is float32 ``(sum(lengths), d)`` (a numpy array or a torch tensor), finite;
    ``lengths`` int64 ``(n_items,)`` numpy. ``start`` is the first item's position in the
    batch it came from. Make one with :meth:`Batch.chunks` / :meth:`Batch.whole` (or
    :meth:`from_items`), never by hand: it is trusted without further checks.

    >>> b = TokenBatch.from_items([np.ones((2, 3)), np.zeros((1, 3))])
    >>> b.offsets.tolist(), b.item(1).shape, len(b)
    ([0, 2, 3], (1, 3), 2)
    """

    start: int
    tokens: Any
    lengths: npt.NDArray[np.int64]

    @classmethod
    def from_items(
        cls, items: Any, dimension: int | None = None, what: str = "batch"
    ) -> TokenBatch:
        """Check a list of ``(n_i, d)`` arrays (or a padded array) and concatenate it."""
        if dimension is None:
            dimension = int(np.shape(items[0])[-1]) if len(items) else 1
        return prepare_batch(items, dimension, what=what).whole()

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def dimension(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def offsets(self) -> npt.NDArray[np.int64]:
        """int64 ``(n_items + 1,)``: item ``i`` is rows ``offsets[i] .. offsets[i+1]``."""
        out = np.zeros(self.lengths.shape[0] + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=out[1:])
        return out

    def item(self, i: int) -> Any:
        """Item ``i``'s tokens ``(n_i, d)`` (a view)."""
        offsets = self.offsets
        return self.tokens[int(offsets[i]) : int(offsets[i + 1])]

    def slice(self, start: int, stop: int) -> TokenBatch:
        """Items ``start .. stop`` (views of the tokens)."""
        offsets = self.offsets
        tokens = self.tokens[int(offsets[start]) : int(offsets[stop])]
        return TokenBatch(self.start + start, tokens, self.lengths[start:stop])


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
    dimension: int = 0
    _whole: TokenBatch | None = None

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def whole(self, *, numpy: bool = False) -> TokenBatch:
        """All items as one :class:`TokenBatch` (``numpy=True``: torch moved to the CPU,
        tokens C-contiguous float32)."""
        chunk = next(iter(self.chunks(1 << 62)), None)
        if chunk is None:
            width = self._width()
            empty: Any = np.zeros((0, width), np.float32)
            return TokenBatch(0, empty, np.zeros(0, np.int64))
        if numpy:
            tokens = chunk.tokens
            if self.backend == "torch":
                tokens = tokens.detach().cpu().numpy()
            tokens = np.ascontiguousarray(tokens, dtype=np.float32)
            chunk = TokenBatch(chunk.start, tokens, chunk.lengths)
        return chunk

    def _width(self) -> int:
        if self._whole is not None:
            return self._whole.dimension
        if self._padded is not None:
            return int(self._padded.shape[-1])
        return self.dimension

    def chunks(self, max_tokens: int) -> Iterator[TokenBatch]:
        """Yield consecutive chunks of whole items holding about ``max_tokens`` tokens."""
        n = len(self)
        start = 0
        cum = np.concatenate([[0], np.cumsum(self.lengths)])
        while start < n:
            stop = int(np.searchsorted(cum, cum[start] + max_tokens, side="right")) - 1
            stop = min(max(stop, start + 1), n)
            yield self._gather(start, stop)
            start = stop

    def _gather(self, start: int, stop: int) -> TokenBatch:
        lengths = self.lengths[start:stop]
        tokens: Any
        if self._whole is not None:  # validated already
            part = self._whole.slice(start, stop)
            return TokenBatch(start, part.tokens, part.lengths)
        if self._items is not None:
            parts = [self._items[i] for i in range(start, stop)]
            if self.backend == "torch":
                import torch

                tokens = torch.cat([p.reshape(-1, p.shape[-1]) for p in parts]).float()
            else:
                tokens = np.concatenate(parts, axis=0, dtype=np.float32)  # one copy
        else:
            padded = self._padded[start:stop]
            mask = self._mask[start:stop]
            tokens = padded[mask]
            tokens = tokens.float() if self.backend == "torch" else tokens.astype(np.float32)
        self._check_finite(tokens, start, lengths)
        return TokenBatch(start, tokens, lengths)

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
    A :class:`TokenBatch` is taken as it is (only its dimension is checked).
    """
    if isinstance(batch, TokenBatch):
        if lengths is not None or mask is not None:
            raise MuveraError(f"{what}: lengths= and mask= do not apply to a TokenBatch")
        if batch.dimension != dimension:
            raise MuveraError(f"{what}: token dimension is {batch.dimension}, expected {dimension}")
        backend = "torch" if is_torch_tensor(batch.tokens) else "numpy"
        device = batch.tokens.device if backend == "torch" else None
        return Batch(backend, device, batch.lengths, None, None, None, what, dimension, batch)
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
    return Batch(backend, device, lens, items, None, None, what, dimension)


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
    return Batch(backend, device, lens, None, batch, mask_obj, what, dimension)


def checked_batch(
    batch: Any, dimension: int, lengths: Any, mask: Any, what: str, noun: str
) -> TokenBatch:
    """:func:`prepare_batch`, then the whole batch as one numpy :class:`TokenBatch` in which
    every item has tokens (``noun`` names an item in the error)."""
    prepared = prepare_batch(batch, dimension, lengths=lengths, mask=mask, what=what)
    tokens = prepared.whole(numpy=True)
    empty = np.flatnonzero(tokens.lengths == 0)
    if empty.size:
        raise MuveraError(f"{what}: {noun} {int(empty[0])} has no tokens")
    return tokens
