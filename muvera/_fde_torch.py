"""Torch kernel of the FDE: the numpy kernel's steps with torch ops, on any device.

Imported only when a user passes torch tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ._fde_numpy import NumpyKernel
from ._matrices import FDEMatrices
from .config import FDEConfig

__all__ = ["TorchKernel"]


class TorchKernel:
    """Same maths as :class:`~muvera._fde_numpy.NumpyKernel`, as torch ops on ``device``."""

    def __init__(self, config: FDEConfig, matrices: FDEMatrices, device: Any) -> None:
        reference = NumpyKernel(config, matrices)
        self._numpy = reference
        self.config = config
        self.device = torch.device(device)
        self.R, self.d, self.k = reference.R, reference.d, reference.k
        self.p, self.B = reference.p, reference.B

        def tensor(a: npt.NDArray[Any] | None) -> torch.Tensor | None:
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

        self.simhash = tensor(reference.simhash)
        self.ams = tensor(reference.ams)
        self.fill_table = tensor(reference.fill_table)
        self.cs_indices = self.cs_signs = None
        if config.final_projection_dimension is not None:
            self.cs_indices = tensor(matrices.count_sketch_indices)
            self.cs_signs = tensor(matrices.count_sketch_signs.astype(np.float32))

    @torch.inference_mode()
    def encode(
        self, X: torch.Tensor, lengths: npt.NDArray[np.int64], document: bool
    ) -> torch.Tensor:
        """FDEs of one chunk: float32 ``(len(lengths), output_dimension)`` on ``device``."""
        R, B, p, k = self.R, self.B, self.p, self.k
        n_items, N = lengths.shape[0], X.shape[0]
        rows = n_items * R * B
        dev = X.device
        lengths_t = torch.from_numpy(lengths).to(dev)
        owner = torch.repeat_interleave(torch.arange(n_items, device=dev), lengths_t)
        if k > 0:
            assert self.simhash is not None
            positive = (X @ self.simhash > 0).view(N, R, k)
            code = torch.zeros((N, R), dtype=torch.int64, device=dev)
            for j in range(k):
                code = (code << 1) | positive[:, :, j].to(torch.int64)
        else:
            code = torch.zeros((N, R), dtype=torch.int64, device=dev)
        partition = code.clone()
        shift = 1
        while shift < k:
            partition ^= partition >> shift
            shift <<= 1
        row_id = ((owner[:, None] * R + torch.arange(R, device=dev)) * B + partition).flatten()
        if self.ams is not None:
            values = (X @ self.ams).view(N * R, p)
        else:
            values = X.unsqueeze(1).expand(N, R, p).reshape(N * R, p)
        sums = torch.zeros((rows, p), dtype=torch.float32, device=dev)
        sums.index_add_(0, row_id, values)
        if document:
            counts = torch.bincount(row_id, minlength=rows)
            sums /= counts.clamp(min=1).to(torch.float32)[:, None]
            if self.config.fill_empty_partitions and k > 0:
                self._fill(sums, counts, code, owner, lengths, values)
        fde = sums.view(n_items, R * B * p)
        if self.cs_indices is not None:
            assert self.cs_signs is not None and self.config.final_projection_dimension
            out = torch.zeros(
                (n_items, self.config.final_projection_dimension), dtype=torch.float32, device=dev
            )
            out.index_add_(1, self.cs_indices, fde * self.cs_signs)
            fde = out
        return fde.contiguous()

    def _fill(
        self,
        sums: torch.Tensor,
        counts: torch.Tensor,
        code: torch.Tensor,
        owner: torch.Tensor,
        lengths: npt.NDArray[np.int64],
        values: torch.Tensor,
    ) -> None:
        R, B = self.R, self.B
        n_items = lengths.shape[0]
        dev = sums.device
        empty = (counts == 0).view(n_items * R, B)
        has_tokens = torch.from_numpy(np.repeat(lengths > 0, R)).to(dev)
        need = torch.nonzero(empty.any(dim=1) & has_tokens).flatten()
        if need.numel() == 0:
            return
        if self.fill_table is None:
            nearest_np = self._numpy._nearest_by_token(
                need.cpu().numpy(), empty.cpu().numpy(), code.cpu().numpy(), lengths
            )
            nearest = torch.from_numpy(nearest_np).to(dev)
        else:
            N = code.shape[0]
            compact = torch.full((n_items * R,), -1, dtype=torch.int64, device=dev)
            compact[need] = torch.arange(need.numel(), device=dev)
            which = compact[owner[:, None] * R + torch.arange(R, device=dev)]
            keep = which >= 0
            big = N + 1
            first = torch.full((need.numel() * B,), big, dtype=torch.int64, device=dev)
            tokens = torch.arange(N, device=dev)[:, None].expand(N, R)
            first.scatter_reduce_(0, (which * B + code)[keep], tokens[keep], reduce="amin")
            first = first.view(need.numel(), B)
            nearest = torch.empty((need.numel(), B), dtype=torch.int64, device=dev)
            step = max(1, (1 << 22) // (B * B))
            sentinel = torch.iinfo(torch.int64).max
            for s in range(0, need.numel(), step):
                f = first[s : s + step][:, None, :]
                key = torch.where(f < big, self.fill_table[None] * big + f, sentinel)
                nearest[s : s + step] = key.min(dim=2).values % big
        m_idx, g_idx = torch.nonzero(empty[need], as_tuple=True)
        tok = nearest[m_idx, g_idx]
        row = need[m_idx]
        sums[row * B + g_idx] = values.view(-1, R, self.p)[tok, row % R]
