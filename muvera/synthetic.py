"""Synthetic multi-vector corpora with planted relevance, for demos, notebooks and tests.

Nothing here is a benchmark of text retrieval: the data only has the shape of it (token
clouds around a shared vocabulary of directions, queries made of noisy copies of one
document's tokens), so that FDE search can be compared with exact MaxSim offline.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["planted_corpus"]


def planted_corpus(
    n_docs: int,
    n_queries: int,
    dim: int,
    *,
    vocabulary: int = 4096,
    doc_tokens: tuple[int, int] = (40, 120),
    query_tokens: int = 12,
    noise: float = 0.9,
    common: float = 0.0,
    seed: int = 0,
) -> tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.float32]], npt.NDArray[np.int64]]:
    """Unit-norm token clouds and queries with one planted relevant document each.

    Documents have between ``doc_tokens[0]`` and ``doc_tokens[1]`` tokens drawn around
    ``vocabulary`` random directions; query ``i`` is ``query_tokens`` tokens of document
    ``targets[i]`` with Gaussian noise of relative size ``noise`` added. ``common`` > 0
    adds ``common`` times one fixed unit vector to every token before the final
    normalisation: an anisotropic token space, as models whose tokens share a large
    common component make (3.0 puts the mean token's norm near 0.95).

    Returns
    -------
    docs : list of float32 ``(n_i, dim)`` arrays
    queries : list of float32 ``(query_tokens, dim)`` arrays
    targets : int64 ``(n_queries,)``, the planted document of each query (distinct)

    Examples
    --------
    >>> docs, queries, targets = planted_corpus(10, 3, 8, seed=1)
    >>> len(docs), queries[0].shape, targets.shape
    (10, (12, 8), (3,))
    """
    if not 0 < n_queries <= n_docs:
        raise ValueError(f"need 0 < n_queries <= n_docs, got {n_queries} and {n_docs}")
    rng = np.random.default_rng(seed)

    def unit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(
            np.float32
        )
        return out

    def jitter(shape: tuple[int, ...], scale: float) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = scale / np.sqrt(dim) * rng.standard_normal(shape)
        return out

    directions = unit(rng.standard_normal((vocabulary, dim)))
    lows, high = doc_tokens
    docs = [
        unit(directions[rng.integers(0, vocabulary, n)] + jitter((int(n), dim), 0.5))
        for n in rng.integers(lows, high + 1, n_docs)
    ]
    targets = rng.choice(n_docs, n_queries, replace=False).astype(np.int64)
    queries = []
    for t in targets.tolist():
        take = min(query_tokens, len(docs[t]))
        picked = docs[t][rng.choice(len(docs[t]), take, replace=False)]
        queries.append(unit(picked + jitter(picked.shape, noise)))
    if common:
        shared = unit(rng.standard_normal(dim)) * common
        docs = [unit(d + shared) for d in docs]
        queries = [unit(q + shared) for q in queries]
    return docs, queries, targets
