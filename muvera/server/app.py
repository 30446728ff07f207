"""The HTTP server of ``muvera serve``: one index and its model, loaded once.

``create_app(path, model=None, writable=False, api_key=None)`` returns a FastAPI app
(``pip install 'muvera-toolkit[server]'``):

* ``POST /search`` ``{"queries": [text, ...]}``, ``{"query_vectors": [[[float]]]}`` or
  ``{"query_vectors_b64": [base64 of float32 rows]}`` (the fastest), with
  optional ``k``, ``candidates``, ``filter`` (muvera's filter dict), ``with_payloads``,
  ``rerank``, ``exact``: ``{"results": [[{"id", "score", "payload"?}]], "timing_ms"}``
  (text encoding, search, and the search's stages: query FDEs, candidates, re-rank).
* ``POST /documents`` ``{"documents": [{"id", "text" | "vectors", ...payload fields}],
  "upsert": false}``, ``DELETE /documents`` ``{"ids": [...]}`` (a writable server only),
  ``GET /documents/{id}`` (``?with_tokens=true`` adds the token vectors).
* ``GET /health``, ``GET /stats`` (``muvera info``'s dict), ``GET /`` a search page.

Concurrency follows the index's own rules: searches run in parallel on a reader opened
with ``mode="r"`` (a snapshot); writes go one at a time through the writer, and after each
commit a fresh reader replaces the old one (requests already running finish on theirs).
Errors are JSON ``{"error": ...}``: 400 bad input, 401 without the API key (``X-API-Key``
or ``Authorization: Bearer``; ``/`` and ``/health`` are open), 404 unknown id, 405 a write
to a read-only server, 413 a body over ``max_request_bytes``.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations, and
# ``Request`` is imported inside create_app (FastAPI is an optional dependency).
import base64
import binascii
import hmac
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MuveraError
from ..index import Index
from ..index.info import describe
from .page import PAGE

__all__ = ["MAX_QUERIES", "MAX_REQUEST_BYTES", "create_app"]

MAX_REQUEST_BYTES = 32 * 1024 * 1024  # a body larger than this is refused (413)
MAX_QUERIES = 1024  # queries (or documents) per request


class _State:
    """The reader that searches use, swapped after every commit of the writer."""

    def __init__(self, path: Path, model: Any, writable: bool, store_options: Any) -> None:
        self.path, self.model, self.store_options = path, model, store_options
        self.writer = Index.open(path, store_options=store_options) if writable else None
        self.write_lock = threading.Lock()
        self.reader = self._open_reader()

    def _open_reader(self) -> Index:
        options = self.store_options
        if self.writer is not None and self.writer.manifest["store"]["kind"] == "qdrant":
            client = getattr(self.writer.store, "client", None)  # one client for both
            options = {**(options or {}), "client": client}
        return Index.open(self.path, mode="r", store_options=options)

    def committed(self) -> None:
        self.reader = self._open_reader()  # running searches keep the reader they took


class _UnknownIdError(LookupError):
    """An unknown document id (404)."""


def _bad(message: str) -> MuveraError:
    return MuveraError(message)


def _vectors(value: Any, what: str) -> list[np.ndarray]:
    if not isinstance(value, list) or not value:
        raise _bad(f"{what} must be a non-empty list of (n_tokens, dim) arrays")
    try:
        arrays = [np.asarray(v, dtype=np.float32) for v in value]
    except (TypeError, ValueError):
        raise _bad(f"{what} must hold numbers only") from None
    if any(a.ndim != 2 for a in arrays):
        raise _bad(f"{what} must be a list of 2-D arrays (n_tokens, dim)")
    return arrays


def _b64_vectors(value: Any, dim: int) -> list[np.ndarray]:
    """Queries as base64 strings of little-endian float32 rows of ``dim`` values (12 KiB of
    text per 23-token query instead of ~40 KiB of JSON numbers, and no float parsing)."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _bad("query_vectors_b64 must be a non-empty list of base64 strings")
    out = []
    for i, text in enumerate(value):
        try:
            raw = base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            raise _bad(f"query_vectors_b64[{i}] is not base64") from None
        if not raw or len(raw) % (4 * dim):
            raise _bad(f"query_vectors_b64[{i}] is not whole rows of {dim} float32 values")
        out.append(np.frombuffer(raw, dtype="<f4").reshape(-1, dim).astype(np.float32))
    return out


def _int(body: dict[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(f"{key} must be a positive integer")
    return value


def _search(state: _State, body: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    reader = state.reader
    known = {"queries", "query_vectors", "query_vectors_b64", "k", "candidates", "filter",
             "with_payloads", "rerank", "exact"}  # fmt: skip
    unknown = set(body) - known
    if unknown:
        raise _bad(f"unknown fields {sorted(unknown)}")
    given = [key for key in ("queries", "query_vectors", "query_vectors_b64") if key in body]
    if len(given) != 1:
        raise _bad("give 'queries' (texts), 'query_vectors' or 'query_vectors_b64', one of them")
    if "queries" in body:
        texts = body["queries"]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _bad("queries must be a non-empty list of strings")
        if len(texts) > MAX_QUERIES:
            raise _bad(f"at most {MAX_QUERIES} queries per request")
        if state.model is None:
            raise _bad("this server has no model: send query_vectors")
        tokens = state.model.encode_queries(texts)
    elif "query_vectors_b64" in body:
        tokens = _b64_vectors(body["query_vectors_b64"], reader.token_dimension)
        if len(tokens) > MAX_QUERIES:
            raise _bad(f"at most {MAX_QUERIES} queries per request")
    else:
        tokens = _vectors(body["query_vectors"], "query_vectors")
        if len(tokens) > MAX_QUERIES:
            raise _bad(f"at most {MAX_QUERIES} queries per request")
    t1 = time.perf_counter()
    k, candidates = _int(body, "k", 10), _int(body, "candidates", reader.default_candidates)
    with_payloads = bool(body.get("with_payloads", True))
    if body.get("exact"):
        result = reader.search_exact(
            tokens, k=k, with_payloads=with_payloads, query_filter=body.get("filter")
        )
    else:
        result = reader.search(
            tokens, k=k, candidates=candidates, rerank=bool(body.get("rerank", True)),
            with_payloads=with_payloads, query_filter=body.get("filter"),
        )  # fmt: skip
    t2 = time.perf_counter()
    results = []
    for i in range(result.ids.shape[0]):
        row = []
        for j, (doc_id, score) in enumerate(zip(result.ids[i].tolist(), result.scores[i].tolist(),
                                                strict=True)):  # fmt: skip
            if score == float("-inf"):
                break
            hit: dict[str, Any] = {"id": doc_id, "score": score}
            if result.payloads is not None:
                hit["payload"] = result.payloads[i][j]
            row.append(hit)
        results.append(row)
    return {
        "results": results,
        "generation": reader.manifest["generation"],
        "timing_ms": {
            "encode": 1000 * (t1 - t0),
            "search": 1000 * (t2 - t1),
            "stages": {k.removesuffix("_ms"): v for k, v in (result.timings or {}).items()},
            "total": 1000 * (time.perf_counter() - t0),
        },
    }


def _add(state: _State, body: dict[str, Any]) -> dict[str, Any]:
    if state.writer is None:
        raise PermissionError("this server is read-only (start it with --writable)")
    docs = body.get("documents")
    if not isinstance(docs, list) or not docs or not all(isinstance(d, dict) for d in docs):
        raise _bad("documents must be a non-empty list of objects with 'id'")
    if len(docs) > MAX_QUERIES:
        raise _bad(f"at most {MAX_QUERIES} documents per request")
    ids = [d.get("id") for d in docs]
    has_text = ["text" in d for d in docs]
    with_vectors = all("vectors" in d for d in docs)
    if not (all(has_text) or (with_vectors and not any(has_text))):
        raise _bad("every document needs 'text' (all of them) or 'vectors' (all of them)")
    payloads = [{k: v for k, v in d.items() if k not in ("id", "vectors")} or None for d in docs]
    if all(has_text):
        if state.model is None:
            raise _bad("this server has no model: send vectors")
        texts = [d["text"] for d in docs]
        if not all(isinstance(t, str) for t in texts):
            raise _bad("text must be a string")
        titles = [str(d.get("title") or "") for d in docs]
        joined = [(a + " " + b).strip() for a, b in zip(titles, texts, strict=True)]
        tokens = state.model.encode_documents(joined)
    else:
        tokens = _vectors([d["vectors"] for d in docs], "vectors")
    with state.write_lock:
        writer = state.writer
        (writer.upsert if body.get("upsert") else writer.add)(ids, tokens, payloads)
        state.committed()
        return {"documents": len(writer), "generation": writer.manifest["generation"]}


def _delete(state: _State, body: dict[str, Any]) -> dict[str, Any]:
    if state.writer is None:
        raise PermissionError("this server is read-only (start it with --writable)")
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids:
        raise _bad("ids must be a non-empty list")
    with state.write_lock:
        state.writer.delete(ids)
        state.committed()
        return {"documents": len(state.writer), "generation": state.writer.manifest["generation"]}


def _get(state: _State, doc_id: str, with_tokens: bool) -> dict[str, Any]:
    reader = state.reader
    key: Any = doc_id
    if reader.records.id_type == "int":
        try:
            key = int(doc_id)
        except ValueError:
            raise _UnknownIdError(doc_id) from None
    if key not in reader:
        raise _UnknownIdError(doc_id)
    doc = reader.get([key])[0]
    out: dict[str, Any] = {"id": doc.id, "payload": doc.payload, "n_tokens": len(doc.tokens)}
    if with_tokens:
        out["tokens"] = doc.tokens.tolist()
    return out


def create_app(
    path: str | Path,
    model: Any = None,
    *,
    writable: bool = False,
    api_key: str | None = None,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    store_options: dict[str, Any] | None = None,
) -> Any:
    """The FastAPI app serving the index at ``path`` (``model``: a :class:`muvera.ColBERT`
    for text queries and documents, or None for token vectors only)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import HTMLResponse, JSONResponse
    except ImportError:
        raise MuveraError(
            "muvera serve needs FastAPI and uvicorn: pip install 'muvera-toolkit[server]'"
        ) from None
    state = _State(Path(path), model, writable, store_options)
    app = FastAPI(title="muvera", version=describe(state.reader)["library_version"] or "")
    app.state.muvera = state
    open_paths = {"/", "/health"}

    app.add_middleware(_Guard, api_key=api_key or None, max_request_bytes=max_request_bytes,
                       open_paths=open_paths)  # fmt: skip

    async def body_of(request: Request) -> dict[str, Any]:
        raw = b""
        async for chunk in request.stream():  # counted: a chunked body has no length header
            raw += chunk
            if len(raw) > max_request_bytes:
                raise OverflowError(f"request body over {max_request_bytes} bytes")
        import json

        try:
            body = json.loads(raw or b"{}", parse_constant=_no_constant)
        except ValueError as exc:
            raise _bad(f"the body is not JSON ({exc})") from None
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object")
        return body

    def answer(fn: Any, *args: Any) -> Any:
        try:
            return JSONResponse(fn(*args))
        except _UnknownIdError as exc:
            return JSONResponse({"error": f"unknown id {exc.args[0]!r}"}, 404)
        except PermissionError as exc:
            return JSONResponse({"error": str(exc)}, 405)
        except MuveraError as exc:
            status = 404 if str(exc).startswith("unknown id") else 400
            return JSONResponse({"error": str(exc)}, status)

    async def run(request: Request, fn: Any) -> Any:
        from starlette.concurrency import run_in_threadpool

        try:
            body = await body_of(request)
        except OverflowError as exc:
            return JSONResponse({"error": str(exc)}, 413)
        except MuveraError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return await run_in_threadpool(answer, fn, state, body)  # searches run in parallel

    @app.post("/search")
    async def search(request: Request) -> Any:
        return await run(request, _search)

    @app.post("/documents")
    async def add(request: Request) -> Any:
        return await run(request, _add)

    @app.delete("/documents")
    async def delete(request: Request) -> Any:
        return await run(request, _delete)

    @app.get("/documents/{doc_id}")
    def get(doc_id: str, with_tokens: bool = False) -> Any:
        return answer(_get, state, doc_id, with_tokens)

    @app.get("/health")
    def health() -> Any:
        reader = state.reader
        return {"status": "ok", "documents": len(reader),
                "generation": reader.manifest["generation"]}  # fmt: skip

    @app.get("/stats")
    def stats() -> Any:
        info = describe(state.reader)
        return {**info, "writable": state.writer is not None, "model": info["model"],
                "serving_model": getattr(state.model, "name", None)}  # fmt: skip

    @app.get("/", response_class=HTMLResponse)
    def page() -> Any:
        return PAGE

    return app


class _Guard:
    """ASGI middleware (plain, cheaper than FastAPI's ``@app.middleware``): a body whose
    declared length is over the cap gets 413, a request without the API key 401."""

    def __init__(
        self, app: Any, api_key: str | None, max_request_bytes: int, open_paths: set[str]
    ) -> None:
        self.app, self.api_key, self.limit, self.open_paths = (
            app, api_key, max_request_bytes, open_paths,
        )  # fmt: skip

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope["headers"]}  # fmt: skip
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                return await _json_error(send, 413, f"request body over {self.limit} bytes")
            if self.api_key and scope["path"] not in self.open_paths:
                given = headers.get("x-api-key", "")
                auth = headers.get("authorization", "")
                if not given and auth.lower().startswith("bearer "):
                    given = auth[7:]
                if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                    return await _json_error(send, 401, "missing or wrong API key")
        await self.app(scope, receive, send)


async def _json_error(send: Any, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
