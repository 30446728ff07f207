"""Qdrant's own engine in process: the subset of ``QdrantClient`` the qdrant store uses,
run on Qdrant Edge shards (``pip install qdrant-edge-py``).

qdrant-client's local mode is a pure-Python re-implementation; Qdrant Edge embeds the
engine of the server (segments, WAL, HNSW, payload indexes, multivector MaxSim, prefetch,
filters). ``QdrantStore`` takes ``store_options={"edge_path": DIR}`` and then talks to an
:class:`EdgeClient`: one shard per collection, in ``DIR/<collection>``. Requests arrive as
``qdrant_client.models`` objects (what the store builds for every backend) and are
translated here, filters included.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..errors import MuveraError

__all__ = ["EdgeClient"]


def _import_edge() -> Any:
    try:
        import qdrant_edge
    except ImportError:
        raise MuveraError(
            "edge_path needs Qdrant Edge: pip install qdrant-edge-py (and qdrant-client)"
        ) from None
    return qdrant_edge


class EdgeClient:
    """Collections as Qdrant Edge shards under ``root`` (calls are serialised: one shard
    object is not shared between threads mid-call)."""

    def __init__(self, root: str | Path) -> None:
        self.qe = _import_edge()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, Any] = {}
        self._lock = threading.RLock()

    # -- collections ----------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        if not name or "/" in name or name in (".", ".."):
            raise MuveraError(f"bad collection name {name!r}")
        return self.root / name

    def _shard(self, name: str) -> Any:
        with self._lock:
            if name not in self._shards:
                if not self.collection_exists(name):
                    raise MuveraError(f"Qdrant Edge has no collection {name!r} in {self.root}")
                self._shards[name] = self.qe.EdgeShard.load(str(self._dir(name)))
            return self._shards[name]

    def collection_exists(self, collection_name: str) -> bool:
        path = self._dir(collection_name)
        return path.is_dir() and any(path.iterdir())

    def create_collection(
        self, collection_name: str, vectors_config: dict[str, Any], **_: Any
    ) -> None:
        qe = self.qe
        vectors = {}
        for name, params in vectors_config.items():
            kwargs: dict[str, Any] = {}
            if params.multivector_config is not None:
                kwargs["multivector_config"] = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
            if params.hnsw_config is not None and params.hnsw_config.m == 0:
                kwargs["hnsw_config"] = qe.HnswIndexConfig(
                    m=0, ef_construct=100, full_scan_threshold=10000
                )
            if params.datatype is not None and str(params.datatype.value).lower() == "float16":
                kwargs["datatype"] = qe.VectorStorageDatatype.Float16
            scalar = getattr(params.quantization_config, "scalar", None)
            if scalar is not None:  # int8 scalar quantization
                kwargs["quantization_config"] = qe.ScalarQuantizationConfig(
                    qe.ScalarType.Int8, quantile=scalar.quantile, always_ram=scalar.always_ram
                )
            if params.on_disk:
                kwargs["on_disk"] = True
            vectors[name] = qe.EdgeVectorParams(
                size=params.size, distance=qe.Distance.Dot, **kwargs
            )
        with self._lock:
            self._shards[collection_name] = qe.EdgeShard.create(
                str(self._dir(collection_name)), qe.EdgeConfig(vectors=vectors)
            )

    def create_payload_index(self, collection_name: str, field_name: str, **_: Any) -> None:
        qe = self.qe
        self._update(
            collection_name, qe.UpdateOperation.create_field_index(
                field_name, qe.PayloadSchemaType.Integer
            ),
        )  # fmt: skip

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.close()
            self._shards.clear()

    # -- points ---------------------------------------------------------------------------
    def _update(self, collection_name: str, operation: Any) -> None:
        with self._lock:
            shard = self._shard(collection_name)
            shard.update(operation)
            shard.flush()

    def upsert(self, collection_name: str, points: Sequence[Any], **_: Any) -> None:
        qe = self.qe
        converted = [
            qe.Point(
                int(p.id),
                {k: np.asarray(v, dtype=np.float32) for k, v in p.vector.items()},
                p.payload,
            )
            for p in points
        ]
        self._update(collection_name, qe.UpdateOperation.upsert_points(converted))

    def delete(self, collection_name: str, points_selector: Any, **_: Any) -> None:
        qe = self.qe
        if hasattr(points_selector, "points"):
            ids = [int(x) for x in points_selector.points]
            operation = qe.UpdateOperation.delete_points(ids)
        else:
            operation = qe.UpdateOperation.delete_points_by_filter(
                self._filter(points_selector.filter)
            )
        self._update(collection_name, operation)

    def overwrite_payload(
        self, collection_name: str, payload: dict[str, Any], points: Sequence[int], **_: Any
    ) -> None:
        operation = self.qe.UpdateOperation.overwrite_payload([int(x) for x in points], payload)
        self._update(collection_name, operation)

    def count(self, collection_name: str, exact: bool = True) -> Any:
        with self._lock:
            n = self._shard(collection_name).count(self.qe.CountRequest(exact=exact))
        return SimpleNamespace(count=int(n))

    def retrieve(
        self,
        collection_name: str,
        ids: Sequence[int],
        with_vectors: Any = False,
        with_payload: Any = True,
        **_: Any,
    ) -> list[Any]:
        with self._lock:
            records = self._shard(collection_name).retrieve(
                [int(x) for x in ids], with_payload=with_payload, with_vector=with_vectors
            )
        return [SimpleNamespace(id=r.id, vector=r.vector, payload=r.payload) for r in records]

    def scroll(
        self, collection_name: str, limit: int = 10, with_payload: Any = True, **_: Any
    ) -> tuple[list[Any], Any]:
        with self._lock:
            records, offset = self._shard(collection_name).scroll(
                self.qe.ScrollRequest(limit=limit, with_payload=with_payload)
            )
        return [SimpleNamespace(id=r.id, payload=r.payload) for r in records], offset

    def query_batch_points(self, collection_name: str, requests: Sequence[Any]) -> list[Any]:
        qe = self.qe
        converted = []
        for r in requests:
            prefetches = None
            if r.prefetch is not None:
                p = r.prefetch
                prefetches = [
                    qe.Prefetch(limit=p.limit, query=self._nearest(p.query, p.using),
                                filter=self._filter(p.filter))
                ]  # fmt: skip
            converted.append(
                qe.QueryRequest(
                    limit=r.limit, query=self._nearest(r.query, r.using), prefetches=prefetches,
                    filter=self._filter(r.filter), with_payload=bool(r.with_payload),
                )
            )  # fmt: skip
        with self._lock:
            found = self._shard(collection_name).query_batch(qe.QueryBatchRequest(converted))
        return [SimpleNamespace(points=hits) for hits in found]

    def _nearest(self, vector: Any, using: str) -> Any:
        return self.qe.Query.Nearest(np.asarray(vector, dtype=np.float32), using=using)

    # -- filters --------------------------------------------------------------------------
    def _filter(self, f: Any) -> Any:
        """A ``qdrant_client.models.Filter`` as a Qdrant Edge filter (None stays None)."""
        if f is None:
            return None
        qe = self.qe

        def clauses(items: Any) -> list[Any] | None:
            if items is None:
                return None
            items = items if isinstance(items, list) else [items]
            return [self._condition(c) for c in items]

        return qe.Filter(must=clauses(f.must), should=clauses(f.should),
                         must_not=clauses(f.must_not))  # fmt: skip

    def _condition(self, c: Any) -> Any:
        qe = self.qe
        kind = type(c).__name__
        if kind == "Filter":
            return self._filter(c)
        if kind == "HasIdCondition":
            return qe.HasIdCondition(set(int(x) for x in c.has_id))
        if kind == "IsEmptyCondition":
            return qe.IsEmptyCondition(c.is_empty.key)
        if kind == "IsNullCondition":
            return qe.IsNullCondition(c.is_null.key)
        if kind == "FieldCondition":
            if c.range is not None:
                r = c.range
                bounds = qe.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)
                return qe.FieldCondition(c.key, range=bounds)
            match = c.match
            mkind = type(match).__name__
            if mkind == "MatchValue":
                return qe.FieldCondition(c.key, match=qe.MatchValue(match.value))
            if mkind == "MatchAny":
                return qe.FieldCondition(c.key, match=qe.MatchAny(list(match.any)))
            if mkind == "MatchExcept":
                return qe.FieldCondition(c.key, match=qe.MatchExcept(list(match.except_)))
        raise MuveraError(f"Qdrant Edge: this filter condition is not supported ({kind})")
