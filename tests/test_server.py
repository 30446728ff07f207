"""`muvera serve`: the HTTP API against the library it wraps, its errors and limits, searches
beside writes, and the search page in headless Chromium (when installed)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
from helpers import ragged

from muvera import FDEConfig, Index

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient

from muvera.server import create_app

D = 16


def _docs(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return ragged(rng, rng.integers(3, 12, n), D)


@pytest.fixture
def index_path(tmp_path):
    docs = _docs(60)
    path = tmp_path / "ix"
    with Index.create(path, FDEConfig(dimension=D, num_repetitions=4), store="exact") as index:
        payloads = [{"title": f"doc {i}", "lang": "en" if i % 2 else "fr"} for i in range(60)]
        index.add([f"d{i}" for i in range(60)], docs, payloads)
    return path


def _vectors(arrays) -> list:
    return [a.tolist() for a in arrays]


def test_search_get_health_and_stats_match_the_library(index_path):
    docs = _docs(60)
    client = TestClient(create_app(index_path))
    assert client.get("/health").json() == {"status": "ok", "documents": 60, "generation": 1}
    stats = client.get("/stats").json()
    assert stats["documents"] == 60 and stats["store"] == "exact" and not stats["writable"]
    queries = [d[:3] for d in docs[:5]]
    response = client.post("/search", json={"query_vectors": _vectors(queries), "k": 4,
                                            "candidates": 20})  # fmt: skip
    assert response.status_code == 200
    body = response.json()
    with Index.open(index_path, mode="r") as index:
        want = index.search(queries, k=4, candidates=20, with_payloads=True)
    for i, row in enumerate(body["results"]):
        assert [h["id"] for h in row] == want.ids[i].tolist()
        np.testing.assert_allclose([h["score"] for h in row], want.scores[i], rtol=1e-6)
        assert [h["payload"] for h in row] == want.payloads[i]
    assert set(body["timing_ms"]) == {"encode", "search", "stages", "total"}
    assert set(body["timing_ms"]["stages"]) == {"fde", "candidates", "rerank"}
    import base64

    b64 = [base64.b64encode(q.astype("<f4").tobytes()).decode() for q in queries]
    same = client.post("/search", json={"query_vectors_b64": b64, "k": 4, "candidates": 20})
    assert same.json()["results"] == body["results"]
    for bad in (["%%%"], [base64.b64encode(b"abc").decode()], "x", []):
        response = client.post("/search", json={"query_vectors_b64": bad})
        assert response.status_code == 400 and "query_vectors_b64" in response.json()["error"]
    en = {"must": [{"key": "lang", "match": {"value": "en"}}]}
    filtered = client.post("/search", json={"query_vectors": _vectors(queries), "filter": en})
    assert all(h["payload"]["lang"] == "en" for row in filtered.json()["results"] for h in row)
    doc = client.get("/documents/d7").json()
    assert doc == {
        "id": "d7",
        "payload": {"title": "doc 7", "lang": "en"},
        "n_tokens": len(docs[7]),
    }
    tokens = client.get("/documents/d7", params={"with_tokens": True}).json()["tokens"]
    np.testing.assert_allclose(tokens, docs[7], atol=2e-3)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "one of them"),
        ({"queries": ["a"], "query_vectors": [[[0.0] * D]]}, 400, "one of them"),
        ({"queries": ["a"]}, 400, "no model"),
        ({"query_vectors": [[[0.0] * D]], "k": 0}, 400, "k must be"),
        ({"query_vectors": [[[0.0] * D]], "k": "3"}, 400, "k must be"),
        ({"query_vectors": [[[0.0] * (D + 1)]]}, 400, "dimension"),
        ({"query_vectors": [[0.0] * D]}, 400, "2-D"),
        ({"query_vectors": [[["x"] * D]]}, 400, "numbers"),
        ({"query_vectors": [[[0.0] * D]], "limit": 3}, 400, "unknown fields"),
        ({"query_vectors": [[[0.0] * D]], "filter": {"must": 3}}, 400, "query_filter"),
        ({"query_vectors": [[[0.0] * D]] * 1025}, 400, "at most 1024"),
    ],
)
def test_bad_search_requests_get_4xx_json(index_path, body, status, message):
    client = TestClient(create_app(index_path))
    response = client.post("/search", json=body)
    assert response.status_code == status and message in response.json()["error"]


def test_malformed_and_oversized_bodies_and_the_api_key(index_path):
    client = TestClient(create_app(index_path, api_key="s3cret", max_request_bytes=4096))
    assert client.get("/health").status_code == 200  # open
    assert client.get("/").status_code == 200  # the page is open; its requests are not
    query = {"query_vectors": [[[0.1] * D]]}
    assert client.post("/search", json=query).status_code == 401
    assert client.post("/search", json=query, headers={"x-api-key": "wrong"}).status_code == 401
    ok = client.post("/search", json=query, headers={"x-api-key": "s3cret"})
    assert ok.status_code == 200
    bearer = client.post("/search", json=query, headers={"authorization": "Bearer s3cret"})
    assert bearer.status_code == 200
    key = {"x-api-key": "s3cret"}
    bad = client.post("/search", content=b"{not json", headers=key)
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]
    nan = client.post("/search", content=b'{"query_vectors": [[[NaN]]]}', headers=key)
    assert nan.status_code == 400
    big = {"query_vectors": [[[0.1] * D] * 100]}
    assert client.post("/search", json=big, headers=key).status_code == 413

    def chunks():  # no content-length header: counted while read
        yield b'{"query_vectors": [[' + b"[0.1" + b",0.1" * (D - 1) + b"]"
        for _ in range(200):
            yield b",[0.1" + b",0.1" * (D - 1) + b"]"
        yield b"]]}"

    assert client.post("/search", content=chunks(), headers=key).status_code == 413
    assert client.get("/documents/nope", headers=key).status_code == 404
    assert client.post("/documents", json={"documents": [{"id": "x", "vectors": [[0.0] * D]}]},
                       headers=key).status_code == 405  # fmt: skip


def test_writes_through_a_writable_server(index_path):
    client = TestClient(create_app(index_path, writable=True))
    new = _docs(3, seed=9)
    body = {"documents": [{"id": f"n{i}", "vectors": new[i].tolist(), "lang": "de"}
                          for i in range(3)]}  # fmt: skip
    response = client.post("/documents", json=body)
    assert response.status_code == 200 and response.json()["documents"] == 63
    hit = client.post("/search", json={"query_vectors": [new[1].tolist()], "k": 1}).json()
    assert hit["results"][0][0]["id"] == "n1" and hit["results"][0][0]["payload"] == {"lang": "de"}
    assert client.post("/documents", json=body).status_code == 400  # ids exist
    body["upsert"] = True
    assert client.post("/documents", json=body).json()["documents"] == 63
    mixed = {"documents": [{"id": "a", "text": "x"}, {"id": "b", "vectors": [[0.0] * D]}]}
    assert client.post("/documents", json=mixed).status_code == 400
    gone = client.request("DELETE", "/documents", json={"ids": ["n0", "d3"]})
    assert gone.status_code == 200 and gone.json()["documents"] == 61
    assert client.get("/documents/n0").status_code == 404
    unknown = client.request("DELETE", "/documents", json={"ids": ["zzz"]})
    assert unknown.status_code == 400 and "unknown ids" in unknown.json()["error"]
    with Index.open(index_path, mode="r") as index:  # committed on disk
        assert len(index) == 61 and "n1" in index


def test_searches_beside_writes_never_fail(index_path):
    """Threads search while another adds in batches: every search answers 200 with hits
    of a committed generation, generations only move forward."""
    client = TestClient(create_app(index_path, writable=True))
    docs = _docs(60)
    errors, seen = [], []
    stop = threading.Event()

    def searcher(i: int) -> None:
        while not stop.is_set():
            r = client.post("/search", json={"query_vectors": [docs[i][:3].tolist()], "k": 3})
            if r.status_code != 200:
                errors.append(r.text)
                continue
            seen.append(r.json()["generation"])
            if r.json()["results"][0][0]["id"] != f"d{i}":
                errors.append(r.text)

    threads = [threading.Thread(target=searcher, args=(i,)) for i in (4, 11, 25)]
    for t in threads:
        t.start()
    try:
        for b in range(8):
            new = _docs(5, seed=100 + b)
            batch = [{"id": f"b{b}-{j}", "vectors": new[j].tolist()} for j in range(5)]
            assert client.post("/documents", json={"documents": batch}).status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert len(seen) > 10 and max(seen) > min(seen)
    assert client.get("/health").json()["documents"] == 100


def test_text_queries_and_documents_with_a_model(tmp_path):
    pytest.importorskip("transformers")
    from model_fixtures import pylate_model

    from muvera import ColBERT

    pylate_model(tmp_path / "model", n_dense=1)
    model = ColBERT(tmp_path / "model", device="cpu")
    path = tmp_path / "ix"
    texts = ["the cat sat on the mat", "a dog ran in the park", "hello world"]
    with Index.create(path, FDEConfig(dimension=model.dimension)) as index:
        index.add_texts(model, ["a", "b", "c"], texts)
    client = TestClient(create_app(path, model, writable=True))
    added = client.post("/documents", json={"documents": [{"id": "d", "text": "fish swim",
                                                            "title": "Fish"}]})  # fmt: skip
    assert added.status_code == 200
    response = client.post("/search", json={"queries": ["cat on a mat", "fish"], "k": 2})
    with Index.open(path, mode="r") as index:
        want = index.search(model.encode_queries(["cat on a mat", "fish"]), k=2)
        assert index.get(["d"])[0].payload == {"text": "fish swim", "title": "Fish"}
    got = [[h["id"] for h in row] for row in response.json()["results"]]
    assert got == want.ids.tolist()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_search_page_in_headless_chromium(index_path, tmp_path):
    """The page at / runs a search in a real browser (?q=... searches on load): the DOM
    after its script ran holds the hits; a screenshot is taken."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt install chromium)")
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("transformers")
    from model_fixtures import pylate_model

    from muvera import ColBERT

    pylate_model(tmp_path / "model", n_dense=1)
    model = ColBERT(tmp_path / "model", device="cpu")
    path = tmp_path / "text-ix"
    with Index.create(path, FDEConfig(dimension=model.dimension)) as index:
        index.add_texts(model, ["cats", "dogs"], ["the cat sat on the mat", "a dog in a park"],
                        [{"title": "Cats"}, {"title": "Dogs"}])  # fmt: skip
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(path, model), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/?q=cat%20on%20the%20mat"
        flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
                 "--virtual-time-budget=8000", "--window-size=1000,700"]  # fmt: skip
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                             timeout=120).stdout  # fmt: skip
        assert "<td>cats</td>" in dom and "Cats" in dom and "MaxSim re-rank" in dom, dom[-2000:]
        shot = tmp_path / "page.png"
        subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
    finally:
        server.should_exit = True
        thread.join(10)


def test_serve_command_wires_the_app(tmp_path, index_path, monkeypatch):
    """`muvera serve` builds the app from the index (no model) and hands it to uvicorn."""
    uvicorn = pytest.importorskip("uvicorn")
    from muvera.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert main(["--quiet", "serve", str(index_path), "--no-model", "--port", "8123"]) == 0
    client = TestClient(seen["app"])
    assert seen["port"] == 8123 and client.get("/health").json()["documents"] == 60
    assert json.loads(client.get("/stats").text)["serving_model"] is None
