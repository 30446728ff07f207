"""Qdrant backend: Qdrant stores the FDEs *and* the token vectors, and runs both stages.

One collection holds, per document, a dense ``fde`` vector (DOT) and a ``tokens``
multivector (MAX_SIM comparator, no HNSW graph: ``m=0``, float16 storage). A search is a
single ``query_points`` call: a ``prefetch`` of the FDE top-``candidates``, re-ranked by
Qdrant with exact MaxSim on ``tokens``. Payloads are stored with the points, so Qdrant
filters apply to both stages. Works with a server or cluster (``url=``) and with
qdrant-client's local mode (``path=`` or ``location=":memory:"``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ..batch import TokenBatch
from ..errors import MuveraError
from .base import Hits, Labels, Payload, StoreRecord
from .local import check_float16_range

__all__ = ["QdrantStore", "upsert_batches"]

ID_KEY = "muvera_id"  # payload key holding the document id
GENERATION_KEY = "muvera_generation"  # payload key: the commit that added the point
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # Qdrant's default HTTP request limit
_JSON_BYTES_PER_FLOAT = 12  # a float32 written as JSON text, with separator (upper bound)
_CONNECTION_KEYS = ("url", "path", "location", "api_key", "prefer_grpc", "timeout", "host", "port",
                    "edge_path")  # fmt: skip
_CREATE_KEYS = {"collection", "shard_number", "replication_factor", "request_bytes", "client",
                "fde_quantization", "tokens_on_disk"}  # fmt: skip
_LOCAL_CLIENTS: dict[str, Any] = {}  # local-mode clients by location (one per storage)


def _remember(key: str, client: Any) -> Any:
    """Keep a local-mode or Edge client for reuse; all are closed at interpreter exit (while
    the modules they need still exist: qdrant-client's own finaliser runs too late)."""
    if not _LOCAL_CLIENTS:
        atexit.register(_close_local_clients)
    _LOCAL_CLIENTS[key] = client
    return client


def _close_local_clients() -> None:
    for client in list(_LOCAL_CLIENTS.values()):
        with contextlib.suppress(Exception):  # exiting: nothing left to tell
            client.close()
    _LOCAL_CLIENTS.clear()


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
    cluster), ``edge_path`` (Qdrant's engine in process, :mod:`.qdrant_edge`), or ``path`` /
    ``location=":memory:"`` (qdrant-client's local mode); ``api_key`` (else the
    ``QDRANT_API_KEY`` variable); ``collection`` (default ``"muvera"``); ``shard_number``
    and ``replication_factor`` for clusters; ``fde_quantization="int8"`` (int8 scalar
    quantization of the FDE vector, kept in RAM, candidates rescored by Qdrant) and
    ``tokens_on_disk=True`` (token vectors memory-mapped from disk), set at creation;
    ``request_bytes`` (upsert batch cap, default
    a quarter of Qdrant's 32 MiB limit); ``client`` (an existing ``QdrantClient``, not
    persisted). Connection options (but not the API key) are kept in the manifest;
    :meth:`muvera.Index.open` takes ``store_options`` to override them.
    """

    kind: ClassVar[str] = "qdrant"
    filters_payloads: ClassVar[bool] = True  # filters run inside Qdrant, on point payloads
    TOKENS: ClassVar[dict[str, Any]] = {"dtype": "float16", "bytes": 0}  # kept by Qdrant

    def __init__(
        self,
        client: Any,
        collection: str,
        options: dict[str, Any],
        committed: int = 0,
        pending: Sequence[int] = (),
    ) -> None:
        self.client = client
        self.committed = committed  # the generation of the manifest this store was read from
        self.pending = [int(x) for x in pending]  # labels it deleted: still in Qdrant maybe
        self._deleted: list[int] = []  # labels deleted since, for the next commit
        self.pending_payloads: dict[int, Payload] = {}  # the last commit's payload updates
        self._payloads: dict[int, Payload] = {}  # payload updates since, for the next commit
        self.collection = collection
        self.connection = options
        self.options: dict[str, Any] = {}  # the connection lives in the entry, minus secrets
        self._tokens_section: dict[str, Any] = dict(self.TOKENS)
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
        if "edge_path" in kwargs:  # Qdrant's own engine in process (qdrant-edge-py)
            from .qdrant_edge import EdgeClient

            root = str(Path(kwargs["edge_path"]).resolve())
            if root not in _LOCAL_CLIENTS:
                _remember(root, EdgeClient(root))
            return _LOCAL_CLIENTS[root]
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
            _remember(key, qdrant_client.QdrantClient(**kwargs))
        return _LOCAL_CLIENTS[key]

    @classmethod
    def create(
        cls, directory: Path, encoder: Any, options: dict[str, Any], token_dtype: str
    ) -> QdrantStore:
        """A new collection for ``encoder``'s FDEs and tokens (Qdrant keeps tokens as
        float16 when ``token_dtype`` is a float type; quantized codes are refused)."""
        del directory
        if token_dtype not in ("float16", "float32"):
            raise MuveraError(
                f"the qdrant store keeps float16 tokens; token_dtype={token_dtype!r} is for "
                "the hnswlib and exact stores"
            )
        qdrant_client = _import_qdrant()
        models = qdrant_client.models
        options = dict(options)
        unknown = set(options) - set(_CONNECTION_KEYS) - _CREATE_KEYS
        if unknown:
            raise MuveraError(f"unknown qdrant store options {sorted(unknown)}")
        if options.get("fde_quantization") not in (None, "int8"):
            raise MuveraError("fde_quantization must be None or 'int8'")
        if not isinstance(options.get("tokens_on_disk", False), bool):
            raise MuveraError("tokens_on_disk must be True or False")
        int8 = None
        if options.get("fde_quantization") == "int8":  # FDE codes in RAM, rescored by Qdrant
            int8 = models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(
                    type=models.ScalarType.INT8, quantile=0.99, always_ram=True
                )
            )
        if options.get("location") == ":memory:":
            key = f"memory:{uuid.uuid4().hex}"
            _remember(key, qdrant_client.QdrantClient(location=":memory:"))
            options["location"] = key
        client = cls._client(options)
        collection = str(options.get("collection", "muvera"))
        if client.collection_exists(collection):
            raise MuveraError(f"Qdrant collection {collection!r} already exists; pick another name")
        client.create_collection(
            collection_name=collection,
            vectors_config={
                "fde": models.VectorParams(
                    size=encoder.output_dimension,
                    distance=models.Distance.DOT,
                    quantization_config=int8,
                ),
                "tokens": models.VectorParams(
                    size=encoder.config.dimension,
                    distance=models.Distance.DOT,
                    multivector_config=models.MultiVectorConfig(
                        comparator=models.MultiVectorComparator.MAX_SIM
                    ),
                    hnsw_config=models.HnswConfigDiff(m=0),
                    datatype=models.Datatype.FLOAT16,
                    on_disk=bool(options.get("tokens_on_disk", False)),
                ),
            },
            shard_number=options.get("shard_number"),
            replication_factor=options.get("replication_factor"),
        )
        with warnings.catch_warnings():  # local mode says payload indexes do nothing there
            warnings.filterwarnings("ignore", "Payload indexes have no effect")
            client.create_payload_index(
                collection_name=collection,
                field_name=GENERATION_KEY,
                field_schema=models.PayloadSchemaType.INTEGER,
            )
        return cls(client, collection, options)

    @staticmethod
    def session_options(options: dict[str, Any]) -> dict[str, Any]:
        """The client object and API key given to :meth:`create`: never recorded, passed
        again when the index reopens the collection in this session."""
        return {k: options[k] for k in ("client", "api_key") if options.get(k) is not None}

    @classmethod
    def open(
        cls,
        directory: Path,
        manifest: dict[str, Any],
        arrays: dict[str, npt.NDArray[Any]],
        overrides: dict[str, Any],
    ) -> QdrantStore:
        """Reconnect to the collection the manifest names (``overrides``: connection)."""
        del directory, arrays
        entry = manifest["store"]["entry"]
        store = cls.connect(entry, overrides)
        store.committed = int(manifest["generation"])
        deleted = entry.get("deleted", [])
        if not isinstance(deleted, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in deleted
        ):
            raise MuveraError("the manifest's qdrant 'deleted' list must hold labels (ints >= 0)")
        store.pending = deleted
        payloads = entry.get("payloads", {})
        if not isinstance(payloads, dict) or not all(
            isinstance(k, str) and k.isdigit() and (v is None or isinstance(v, dict))
            for k, v in payloads.items()
        ):
            raise MuveraError("the manifest's qdrant 'payloads' must map labels to payloads")
        store.pending_payloads = {int(k): v for k, v in payloads.items()}
        store._tokens_section = dict(manifest.get("tokens") or cls.TOKENS)
        return store

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
            k: self.connection[k]
            for k in _CONNECTION_KEYS
            if k != "api_key" and self.connection.get(k) is not None
        }
        return {
            "collection": self.collection,
            "connection": connection,
            "request_bytes": self.request_bytes,
            "deleted": list(self._deleted),
            "payloads": {str(k): v for k, v in self._payloads.items()},
        }

    # -- the Store protocol ---------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def check_documents(self, docs: TokenBatch) -> None:
        check_float16_range(docs)  # Qdrant keeps float16 tokens

    def compact(self, alive: npt.NDArray[np.bool_], generation: int, force: bool) -> bool:
        return False  # Qdrant reclaims deleted points itself

    def save(self, directory: Path, generation: int) -> StoreRecord:
        """The entry of commit ``generation``: it lists the labels deleted since the last
        commit, which :meth:`after_commit` then removes from Qdrant."""
        if generation != self.committed + 1 and generation != 0:
            raise MuveraError(f"qdrant store: commit {generation} after {self.committed}")
        return StoreRecord(self.entry(), dict(self._tokens_section), {})

    def after_commit(self, generation: int) -> None:
        """The manifest of ``generation`` is committed: its points are now visible; remove
        the labels it deleted from Qdrant."""
        self.committed, self.pending, self._deleted = generation, list(self._deleted), []
        self.pending_payloads, self._payloads = self._payloads, {}
        self._remove_points(self.pending)
        self._set_payloads(self.pending_payloads)

    def recover(self) -> None:
        """Bring Qdrant back to the committed generation (a writer's open, or after a failed
        write): remove points of uncommitted generations, (re)apply the last commit's
        deletions. Idempotent."""
        models = _import_qdrant().models
        newer = models.FieldCondition(key=GENERATION_KEY, range=models.Range(gt=self.committed))
        self.client.delete(
            collection_name=self.collection,
            points_selector=models.FilterSelector(filter=models.Filter(must=[newer])),
            wait=True,
        )
        self._remove_points(self.pending)
        self._set_payloads(self.pending_payloads)

    def update_payloads(self, labels: list[int], payloads: list[Payload]) -> None:
        """Deferred: Qdrant gets the payloads once the next commit is written."""
        self._payloads.update(zip(labels, payloads, strict=True))

    def _set_payloads(self, payloads: dict[int, Payload]) -> None:
        """Overwrite points' payloads, keeping muvera's keys (id and generation)."""
        if not payloads:
            return
        points = self.client.retrieve(self.collection, ids=list(payloads), with_payload=True)
        for point in points:
            keep = {k: point.payload[k] for k in (ID_KEY, GENERATION_KEY) if k in point.payload}
            self.client.overwrite_payload(
                collection_name=self.collection,
                payload={**(payloads[int(point.id)] or {}), **keep},
                points=[int(point.id)],
                wait=True,
            )

    def _remove_points(self, labels: Sequence[int]) -> None:
        if labels:
            self.client.delete(
                collection_name=self.collection,
                points_selector=_import_qdrant().models.PointIdsList(points=list(labels)),
                wait=True,
            )

    def _visible(self, query_filter: Any) -> Any:
        """``query_filter`` restricted to points of committed generations that the last
        commit did not delete (what this store's manifest describes)."""
        models = _import_qdrant().models
        if isinstance(query_filter, dict):  # muvera's filter dict: Qdrant's JSON syntax
            try:
                query_filter = models.Filter.model_validate(query_filter)
            except ValueError as exc:
                raise MuveraError(f"query_filter is not a Qdrant filter ({exc})") from None
        hidden: list[Any] = [
            models.FieldCondition(key=GENERATION_KEY, range=models.Range(gt=self.committed))
        ]
        if self.pending:
            hidden.append(models.HasIdCondition(has_id=list(self.pending)))
        return models.Filter(must=None if query_filter is None else [query_filter], must_not=hidden)

    def tokens(self, label: int) -> npt.NDArray[np.float32]:
        points = self.client.retrieve(
            collection_name=self.collection, ids=[int(label)], with_vectors=["tokens"]
        )
        if not points:
            raise MuveraError(f"Qdrant collection {self.collection!r} has no point {label}")
        vector = points[0].vector
        tokens = vector.get("tokens") if isinstance(vector, dict) else vector
        return np.asarray(tokens, dtype=np.float32)

    def add(
        self,
        labels: Labels,
        fdes: npt.NDArray[np.float32],
        docs: TokenBatch,
        ids: list[Any],
        payloads: list[Payload],
    ) -> None:
        models = _import_qdrant().models
        offsets = docs.offsets
        sizes = [
            point_bytes(fdes.shape[1], int(n), docs.dimension, len(json.dumps(p or {})))
            for n, p in zip(docs.lengths.tolist(), payloads, strict=True)
        ]
        for start, stop in upsert_batches(sizes, self.request_bytes):
            points = [
                models.PointStruct(
                    id=int(labels[i]),
                    vector={
                        "fde": fdes[i].tolist(),
                        "tokens": docs.tokens[offsets[i] : offsets[i + 1]].tolist(),
                    },
                    payload={
                        **(payloads[i] or {}),
                        ID_KEY: ids[i],
                        GENERATION_KEY: self.committed + 1,
                    },
                )
                for i in range(start, stop)
            ]
            self.client.upsert(collection_name=self.collection, points=points, wait=True)

    def delete(self, labels: Labels) -> None:
        """Deferred: the labels leave Qdrant once the next commit is written."""
        self._deleted.extend(int(x) for x in labels)

    def search(
        self,
        q_fdes: npt.NDArray[np.float32] | None,
        queries: TokenBatch,
        k: int,
        candidates: int | None,
        *,
        rerank: bool,
        alive: npt.NDArray[np.bool_],
        query_filter: Any = None,
        restricted: bool = False,
    ) -> Hits:
        """Both stages in one request per query; ``candidates=None`` (with ``q_fdes=None``)
        skips the FDE stage: a full MaxSim scan of the ``tokens`` vectors (exact search)."""
        del alive, restricted  # the filter keeps what this generation holds
        models = _import_qdrant().models
        query_filter = self._visible(query_filter)
        requests = []
        n_q = len(queries)
        fdes: Sequence[Any] = [None] * n_q if q_fdes is None else list(q_fdes)
        q_offsets = queries.offsets
        for i, fde in enumerate(fdes):
            query = queries.tokens[q_offsets[i] : q_offsets[i + 1]]
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
        t0 = time.perf_counter()
        responses = self.client.query_batch_points(
            collection_name=self.collection, requests=requests
        )
        milliseconds = 1000 * (time.perf_counter() - t0)
        hits = Hits.empty(n_q, k)
        payloads: list[list[Payload]] = [[None] * k for _ in range(n_q)]
        for i, response in enumerate(responses):
            for j, point in enumerate(response.points[:k]):
                hits.labels[i, j] = int(point.id)
                hits.scores[i, j] = float(point.score)
                payload = dict(point.payload or {})
                payload.pop(ID_KEY, None)
                payload.pop(GENERATION_KEY, None)
                payloads[i][j] = payload or None
        return Hits(hits.labels, hits.scores, payloads, {"qdrant_ms": milliseconds})
