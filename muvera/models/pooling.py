"""Document token pooling: Ward clustering of each document's tokens, one mean per cluster.

As PyLate (after its condensed-Ward fix, PyLate > 1.3.4) and sentence-transformers 6's
``HierarchicalTokenPooling(normalize_embeddings=False)`` pool: the first
``protected_tokens`` tokens stay as they are (first in the output); the others are
clustered with Ward linkage on cosine distances ``clip(1 - x.y, 0, 2)`` (condensed) into
``max(n // pool_factor, 1)`` clusters (``fcluster(..., criterion="maxclust")``), each
replaced by the mean of its tokens, in cluster-label order. Documents with at most one
poolable token, or no fewer clusters than tokens, are unchanged. Means are not
re-normalised. The token-pooling paper (Clavie et al., arXiv 2409.14683) reports about half
the vectors at ``pool_factor=2`` for almost no loss; ``benchmarks/bench_pooling.py`` measures
it here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import MuveraError

__all__ = ["pool_tokens"]


def _check(pool_factor: Any, protected_tokens: Any) -> None:
    if isinstance(pool_factor, bool) or not isinstance(pool_factor, (int, float)):
        raise MuveraError(f"pool_factor must be a number >= 1, got {pool_factor!r}")
    if not np.isfinite(pool_factor) or pool_factor < 1:
        raise MuveraError(f"pool_factor must be a number >= 1, got {pool_factor!r}")
    if isinstance(protected_tokens, bool) or not isinstance(protected_tokens, int):
        raise MuveraError(f"protected_tokens must be an int >= 0, got {protected_tokens!r}")
    if protected_tokens < 0:
        raise MuveraError(f"protected_tokens must be an int >= 0, got {protected_tokens!r}")


def _pool_one(
    tokens: npt.NDArray[np.float32], pool_factor: float, protected: int
) -> npt.NDArray[np.float32]:
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    keep = min(protected, tokens.shape[0])
    rest = tokens[keep:]
    n = rest.shape[0]
    target = min(max(int(n // pool_factor), 1), n)
    if n <= 1 or target >= n:
        return tokens
    if target == 1:
        means = rest.mean(axis=0, keepdims=True, dtype=np.float32)
    else:
        distances = np.clip(1 - rest @ rest.T, 0, 2).astype(np.float32)
        tree = linkage(squareform(distances, checks=False), method="ward")
        labels = fcluster(tree, t=target, criterion="maxclust")
        _, dense = np.unique(labels, return_inverse=True)
        sums = np.zeros((int(dense.max()) + 1, rest.shape[1]), dtype=np.float32)
        np.add.at(sums, dense, rest)
        means = sums / np.bincount(dense).astype(np.float32)[:, None]
    return np.concatenate([tokens[:keep], means.astype(np.float32)])


def pool_tokens(
    documents: Sequence[Any], pool_factor: float = 2, protected_tokens: int = 1, device: Any = None
) -> list[Any]:
    """Pool each document's ``(n_i, d)`` token vectors (unit-norm, as the model gives them)
    into about ``n_i / pool_factor`` vectors; returns float32 arrays in input order (torch
    tensors on ``device`` when it is given: a torch device).

    >>> rng = np.random.default_rng(0)
    >>> doc = rng.standard_normal((9, 4)).astype(np.float32)
    >>> doc /= np.linalg.norm(doc, axis=1, keepdims=True)
    >>> [x.shape for x in pool_tokens([doc, doc[:2]], pool_factor=2)]
    [(5, 4), (2, 4)]
    """
    _check(pool_factor, protected_tokens)
    out = []
    for i, doc in enumerate(documents):
        doc = doc.detach().float().cpu().numpy() if hasattr(doc, "detach") else doc
        x = np.asarray(doc, dtype=np.float32)
        if x.ndim != 2 or not np.isfinite(x).all():
            raise MuveraError(f"pool_tokens: document {i} is not a finite (n, d) array")
        out.append(_pool_one(np.ascontiguousarray(x), float(pool_factor), protected_tokens))
    if device is not None:
        import torch

        return [torch.from_numpy(x).to(device) for x in out]
    return out
