"""FDE steps in torch: the numpy steps' maths with torch ops, on any device.

Imported only when a user passes torch tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from .numpy_steps import _FILL_TRANSFORM_MAX_PARTITIONS, NumpyFDE
from .plan import FDEPlan

__all__ = ["TorchFDE"]


class TorchFDE:
    """Same maths as :class:`~muvera.fde.numpy_steps.NumpyFDE`, as torch ops on ``device``."""

    name = "torch"

    def __init__(self, plan: FDEPlan, device: Any) -> None:
        reference = plan
        config, matrices = plan.config, plan.matrices
        self.plan = plan
        self._numpy: NumpyFDE | None = None  # for very many partitions only (see _fill)
        self.config = config
        self.device = torch.device(device)
        self.R, self.d, self.k = plan.R, plan.d, plan.k
        self.p, self.B = plan.p, plan.B

        def tensor(a: npt.NDArray[Any] | None) -> torch.Tensor | None:
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

        self.simhash = tensor(reference.simhash)
        self.ams = tensor(reference.ams)
        self.partition_bits = tensor(reference.partition_bits)
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
            positive = X @ self.simhash > 0  # (N, k*R), j-major columns
            code = torch.zeros((N, R), dtype=torch.int64, device=dev)
            for j in range(k):
                code = (code << 1) | positive[:, j * R : (j + 1) * R].to(torch.int64)
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
        if self.B > _FILL_TRANSFORM_MAX_PARTITIONS:
            if self._numpy is None:
                self._numpy = NumpyFDE(self.plan)
            nearest_np = self._numpy._nearest_by_token(
                need.cpu().numpy(), empty.cpu().numpy(), code.cpu().numpy(), lengths
            )
            nearest = torch.from_numpy(nearest_np).to(dev)
        else:
            nearest = self._nearest_by_code(need, code, lengths)
        m_idx, g_idx = torch.nonzero(empty[need], as_tuple=True)
        tok = nearest[m_idx, g_idx]
        row = need[m_idx]
        sums[row * B + g_idx] = values.view(-1, R, self.p)[tok, row % R]

    def _nearest_by_code(
        self, need: torch.Tensor, code: torch.Tensor, lengths: npt.NDArray[np.int64]
    ) -> torch.Tensor:
        """Torch version of the numpy kernel's distance transform (same maths, same ties)."""
        R, B, dev = self.R, self.B, code.device
        offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)])).to(dev)
        big = code.shape[0] + 1
        inf = 1 << 62
        out = torch.empty((need.numel(), B), dtype=torch.int64, device=dev)
        step = max(1, (1 << 22) // B)
        for s in range(0, need.numel(), step):
            block = need[s : s + step]
            item, rep = block // R, block % R
            counts = offsets[item + 1] - offsets[item]
            m_of = torch.repeat_interleave(torch.arange(block.numel(), device=dev), counts)
            row_start = torch.cumsum(counts, 0) - counts
            tok = offsets[item][m_of] + torch.arange(m_of.numel(), device=dev) - row_start[m_of]
            key = torch.full((block.numel() * B,), inf, dtype=torch.int64, device=dev)
            key.scatter_reduce_(0, m_of * B + code[tok, rep[m_of]], tok, reduce="amin")
            for j in range(self.k):
                halves = key.view(block.numel(), B >> (j + 1), 2, 1 << j)
                low, high = halves[:, :, 0, :], halves[:, :, 1, :]
                new_low = torch.minimum(low, high + big)
                high.copy_(torch.minimum(high, low + big))
                low.copy_(new_low)
            out[s : s + step] = key.view(block.numel(), B)[:, self.partition_bits] % big
        return out
