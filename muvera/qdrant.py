"""Qdrant backend: Qdrant stores the FDEs *and* the token vectors, and runs both stages.

One collection holds, per document, a dense ``fde`` vector (DOT) and a ``tokens``
multivector (MAX_SIM comparator, no HNSW graph: ``m=0``, float16 storage). A search is a
single ``query_points`` call: a ``prefetch`` of the FDE top-``candidates``, re-ranked by
Qdrant with exact MaxSim on ``tokens``. Payloads are stored with the points, so Qdrant
filters apply to both stages. Works with a server or cluster (``url=``) and with
qdrant-client's local mode (``path=`` or ``location=":memory:"``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .errors import MuveraError

__all__ = ["QdrantStore", "upsert_batches"]

ID_KEY = "muvera_id"  # payload key holding the document id
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # Qdrant's default HTTP request limit
_JSON_BYTES_PER_FLOAT = 12  # a float32 written as JSON text, with separator (upper bound)
_CONNECTION_KEYS = ("url", "path", "location", "api_key", "prefer_grpc", "timeout", "host", "port")
_LOCAL_CLIENTS: dict[str, Any] = {}  # local-mode clients by location (one per storage)


def _import_qdrant() -> Any:
    try:
        import qdrant_client
    except ImportError:
        raise MuveraError(
            "the qdrant store needs qdrant-client: pip install 'muvera-toolkit[qdrant]'"
        ) from None
    return qdrant_client


def point_bytes(fde_dim: int, n_tokens: int, token_dim: int, payload_bytes: int) -> int:
    """Upper bound of one point's size in a JSON upsert request."""
    return _JSON_BYTES_PER_FLOAT * (fde_dim + n_tokens * token_dim) + payload_bytes + 256


def upsert_batches(sizes: Sequence[int], limit: int) -> Iterator[tuple[int, int]]:
    """Consecutive ``(start, stop)`` ranges whose summed ``sizes`` stay under ``limit``
    (a single point over the limit goes alone, and the server will say why).

    >>> list(upsert_batches([4, 4, 4, 9, 1], limit=10))
    [(0, 2), (2, 3), (3, 5)]
    """
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > limit:
            yield start, i
            start, total = i, 0
        total += size
    if start < len(sizes):
        yield start, len(sizes)


class QdrantStore:
    """FDE candidates and MaxSim re-ranking, both inside Qdrant.

    Options (``store_options`` of :meth:`muvera.Index.create`): ``url`` (server or
    cluster), or ``path`` / ``location=":memory:"`` (local mode); ``api_key`` (else the
    ``QDRANT_API_KEY`` variable); ``collection`` (default ``"muvera"``); ``shard_number``
    and ``replication_factor`` for clusters; ``request_bytes`` (upsert batch cap, default
    a quarter of Qdrant's 32 MiB limit); ``client`` (an existing ``QdrantClient``, not
    persisted). Connection options (but not the API key) are kept in the manifest;
    :meth:`muvera.Index.open` takes ``store_options`` to override them.
    """

    kind: ClassVar[str] = "qdrant"

    def __init__(self, client: Any, collection: str, options: dict[str, Any]) -> None:
        self.client = client
        self.collection = collection
        self.options = options
        self.request_bytes = int(options.get("request_bytes", MAX_REQUEST_BYTES // 4))
        if not 0 < self.request_bytes <= MAX_REQUEST_BYTES:
            raise MuveraError(f"request_bytes must be in (0, {MAX_REQUEST_BYTES}]")

    # -- connection ----------------------------------------------------------------------
    @staticmethod
    def _client(options: dict[str, Any]) -> Any:
        qdrant_client = _import_qdrant()
        if options.get("client") is not None:
            return options["client"]
        kwargs = {k: options[k] for k in _CONNECTION_KEYS if options.get(k) is not None}
        if "url" in kwargs or "host" in kwargs:
            kwargs.setdefault("api_key", os.environ.get("QDRANT_API_KEY"))
            return qdrant_client.QdrantClient(**kwargs)
        key = str(kwargs.get("path") or kwargs.get("location") or "")
        if not key:
            raise MuveraError("the qdrant store needs url=..., path=... or location=':memory:'")
        if key not in _LOCAL_CLIENTS:
            if key.startswith("memory:"):
                raise MuveraError(
                    "this index used an in-memory Qdrant that is gone (its process ended); "
                    "use path=... or a server url to reopen an index"
                )
            _LOCAL_CLIENTS[key] = qdrant_client.QdrantClient(**kwargs)
        return _LOCAL_CLIENTS[key]

    @classmethod
    def create(cls, encoder: Any, options: dict[str, Any]) -> QdrantStore:
        qdrant_client = _import_qdrant()
        models = qdrant_client.models
        options = dict(options)
        unknown = (
            set(options)
            - set(_CONNECTION_KEYS)
            - {"collection", "shard_number", "replication_factor", "request_bytes", "client"}
        )
        if unknown:
            raise MuveraError(f"unknown qdrant store options {sorted(unknown)}")
        if options.get("location") == ":memory:":
            key = f"memory:{uuid.uuid4().hex}"
            _LOCAL_CLIENTS[key] = qdrant_client.QdrantClient(location=":memory:")
            options["location"] = key
        client = cls._client(options)
        collection = str(options.get("collection", "muvera"))
        if client.collection_exists(collection):
            raise MuveraError(f"Qdrant collection {collection!r} already exists; pick another name")
        client.create_collection(
            collection_name=collection,
            vectors_config={
                "fde": models.VectorParams(
                    size=encoder.output_dimension, distance=models.Distance.DOT
                ),
                "tokens": models.VectorParams(
                    size=encoder.config.dimension,
                    distance=models.Distance.DOT,
                    multivector_config=models.MultiVectorConfig(
                        comparator=models.MultiVectorComparator.MAX_SIM
                    ),
                    hnsw_config=models.HnswConfigDiff(m=0),
                    datatype=models.Datatype.FLOAT16,
                ),
            },
            shard_number=options.get("shard_number"),
            replication_factor=options.get("replication_factor"),
        )
        return cls(client, collection, options)

    @classmethod
    def connect(cls, entry: dict[str, Any], options: dict[str, Any]) -> QdrantStore:
        merged = {**entry.get("connection", {}), **options}
        if "request_bytes" in entry:
            merged.setdefault("request_bytes", entry["request_bytes"])
        client = cls._client(merged)
        collection = entry["collection"]
        if not client.collection_exists(collection):
            where = merged.get("url") or merged.get("path") or merged.get("location")
            raise MuveraError(f"Qdrant collection {collection!r} does not exist at {where}")
        return cls(client, collection, merged)

    def entry(self) -> dict[str, Any]:
        connection = {
            k: self.options[k]
            for k in _CONNECTION_KEYS
            if k != "api_key" and self.options.get(k) is not None
        }
        return {
            "collection": self.collection,
            "connection": connection,
            "request_bytes": self.request_bytes,
        }

    # -- protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def params(self) -> dict[str, Any]:
        return {}

    def save(self, directory: Any, generation: int) -> dict[str, Any]:
        return self.entry()  # Qdrant persists the points itself

    def add(
        self,
        labels: npt.NDArray[np.int64],
        fdes: npt.NDArray[np.float32],
        tokens: Sequence[npt.NDArray[np.float32]],
        ids: Sequence[Any],
        payloads: Sequence[dict[str, Any] | None],
    ) -> None:
        models = _import_qdrant().models
        import json

        sizes = [
            point_bytes(fdes.shape[1], t.shape[0], t.shape[1], len(json.dumps(p or {})))
            for t, p in zip(tokens, payloads, strict=True)
        ]
        for start, stop in upsert_batches(sizes, self.request_bytes):
            points = [
                models.PointStruct(
                    id=int(labels[i]),
                    vector={"fde": fdes[i].tolist(), "tokens": tokens[i].tolist()},
                    payload={**(payloads[i] or {}), ID_KEY: ids[i]},
                )
                for i in range(start, stop)
            ]
            self.client.upsert(collection_name=self.collection, points=points, wait=True)

    def delete(self, labels: npt.NDArray[np.int64]) -> None:
        models = _import_qdrant().models
        self.client.delete(
            collection_name=self.collection,
            points_selector=models.PointIdsList(points=[int(x) for x in labels]),
            wait=True,
        )

    def search(
        self,
        q_fdes: npt.NDArray[np.float32] | None,
        queries: Sequence[npt.NDArray[np.float32]],
        k: int,
        candidates: int | None,
        *,
        rerank: bool,
        query_filter: Any = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], list[list[dict[str, Any] | None]]]:
        """Both stages in one request per query; ``candidates=None`` (with ``q_fdes=None``)
        skips the FDE stage: a full MaxSim scan of the ``tokens`` vectors (exact search)."""
        models = _import_qdrant().models
        requests = []
        fdes: Sequence[Any] = [None] * len(queries) if q_fdes is None else list(q_fdes)
        for fde, query in zip(fdes, queries, strict=True):
            prefetch = None
            if candidates is not None and rerank:  # both stages: FDE prefetch, MaxSim
                prefetch = models.Prefetch(
                    query=fde.tolist(), using="fde", limit=candidates, filter=query_filter
                )
            fde_only = candidates is not None and not rerank
            requests.append(
                models.QueryRequest(
                    prefetch=prefetch,
                    query=(fde if fde_only else query).tolist(),
                    using="fde" if fde_only else "tokens",
                    limit=k,
                    filter=query_filter,
                    with_payload=True,
                )
            )
        responses = self.client.query_batch_points(
            collection_name=self.collection, requests=requests
        )
        n_q = len(requests)
        labels = np.full((n_q, k), -1, dtype=np.int64)
        scores = np.full((n_q, k), -np.inf, dtype=np.float32)
        payloads: list[list[dict[str, Any] | None]] = [[None] * k for _ in range(n_q)]
        for i, response in enumerate(responses):
            for j, point in enumerate(response.points[:k]):
                labels[i, j] = int(point.id)
                scores[i, j] = float(point.score)
                payload = dict(point.payload or {})
                payload.pop(ID_KEY, None)
                payloads[i][j] = payload or None
        return labels, scores, payloads
