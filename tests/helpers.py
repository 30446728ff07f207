from __future__ import annotations

import numpy as np


def ragged(rng: np.random.Generator, lengths, d: int, unit: bool = True) -> list[np.ndarray]:
    """Random float32 token matrices of the given lengths (unit rows by default)."""
    items = []
    for n in lengths:
        x = rng.standard_normal((n, d)).astype(np.float32)
        if unit and n:
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        items.append(x)
    return items


def pad(items: list[np.ndarray], d: int, T: int | None = None, fill: float = 0.0):
    """Padded (n, T, d) array plus lengths for ragged items."""
    T = max([len(x) for x in items] + [0]) if T is None else T
    out = np.full((len(items), T, d), fill, dtype=np.float32)
    for i, x in enumerate(items):
        out[i, : len(x)] = x
    return out, np.array([len(x) for x in items], dtype=np.int64)


def native_kernel_available() -> bool:
    """Whether the compiled FDE kernel is built and enabled."""
    from muvera import native

    return native.load() is not None


def store_args(store: str, tmp_path) -> tuple[str, dict | None]:
    """(store kind, store_options) of a test store name: "qdrant" is qdrant-client's local
    mode in memory, "qdrant-edge" Qdrant's own engine in process (qdrant-edge-py)."""
    import pytest

    if store == "qdrant":
        pytest.importorskip("qdrant_client")
        return "qdrant", {"location": ":memory:"}
    if store == "qdrant-edge":
        pytest.importorskip("qdrant_client")
        pytest.importorskip("qdrant_edge")
        return "qdrant", {"edge_path": str(tmp_path / "edge")}
    if store == "hnswlib-vectors":  # graph files with hnswlib's float32 vectors in them
        return "hnswlib", {"graph_vectors": True}
    return store, None


def format_version(manifest: dict, version: int) -> int:
    """The format version of an index using features of ``version``: at least 8 when its
    hnswlib graph files hold no vectors (the default; muvera/stores/hnsw_links.py)."""
    entry = manifest["store"].get("entry") or {}
    return max(version, 8) if entry.get("graph_vectors") is False else version
