"""Stores behind one protocol (:class:`~muvera.stores.base.Store`): where FDEs and token
vectors live and how both search stages run.

* ``"exact"`` (:class:`ExactStore`): brute-force FDE inner products (ground truth).
* ``"hnswlib"`` (:class:`HnswStore`, the default): hnswlib's HNSW graph, walked over int8
  codes by the compiled kernel.
* ``"qdrant"`` (:class:`QdrantStore`): FDEs and tokens in a Qdrant collection, both stages
  on the server.
"""

from __future__ import annotations

from typing import Any

from ..errors import MuveraError
from .base import Hits, Store, StoreRecord
from .exact import ExactStore
from .hnsw import HnswStore
from .local import TOKEN_DTYPES, LocalStore
from .qdrant import QdrantStore

__all__ = [
    "STORES",
    "TOKEN_DTYPES",
    "ExactStore",
    "Hits",
    "HnswStore",
    "LocalStore",
    "QdrantStore",
    "Store",
    "StoreRecord",
    "store_class",
]

STORES: dict[str, Any] = {"exact": ExactStore, "hnswlib": HnswStore, "qdrant": QdrantStore}


def store_class(kind: Any) -> Any:
    """The class of the store ``kind`` (one of :data:`STORES`)."""
    if not isinstance(kind, str) or kind not in STORES:
        raise MuveraError(f"unknown store {kind!r}; choose one of {sorted(STORES)}")
    return STORES[kind]
