"""`muvera serve` against in-process `Index.search`, token-vector queries, one at a time.

Builds the default index over the cached SciFact token vectors of
``../shared/models/minilm-colbert-128``, starts ``muvera serve --no-model`` on it in a
separate process (uvicorn, one worker), and times the 300 test queries: in process
(``index.search([q], k=10)``) and over HTTP with a keep-alive ``http.client`` connection
(the standard library's, lighter than httpx), both as JSON ``query_vectors`` and as base64
float32 (``query_vectors_b64``); alternating rounds, best p50/p95 per way. A ``GET
/health`` round trip is timed too: the HTTP stack's own cost. Prints a table and writes
``benchmarks/results/server.json``.

Usage: ``python benchmarks/bench_server.py [--rounds 3]``
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from encode_beir import SHARED, load_cached, split_tokens  # noqa: E402
from machine import describe, machine  # noqa: E402
from runner import bench_main  # noqa: E402

from muvera import FDEConfig, Index, __version__  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ms(values: list[float]) -> dict[str, float]:
    a = 1000 * np.asarray(values)
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95))}


def measure(rounds: int) -> dict[str, Any]:
    import http.client

    cached = load_cached(SHARED / "data" / "scifact", SHARED / "models" / "minilm-colbert-128")
    docs = split_tokens(cached["doc_tokens"], cached["doc_lengths"])
    queries = split_tokens(cached["query_tokens"], cached["query_lengths"])
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        with Index.create(path, FDEConfig(dimension=128)) as index:
            index.add(list(range(len(docs))), docs)
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "muvera.cli.main", "--quiet", "serve", str(path),
             "--no-model", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

            def call(method: str, url: str, body: dict[str, Any] | None = None) -> None:
                data = None if body is None else json.dumps(body).encode()
                client.request(method, url, body=data, headers={"content-type": "application/json"})
                response = client.getresponse()
                payload = response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url}: {response.status} {payload[:200]!r}")

            for _ in range(600):
                try:
                    call("GET", "/health")
                    break
                except (OSError, http.client.HTTPException):
                    client.close()
                    time.sleep(0.1)
            reader = Index.open(path, mode="r")

            def post(body: dict[str, Any]) -> None:
                call("POST", "/search", {**body, "k": 10, "with_payloads": False})

            def b64(q: np.ndarray) -> str:
                return base64.b64encode(q.astype(np.float32).tobytes()).decode()

            ways = {
                "in process": lambda q: reader.search([q], k=10),
                "HTTP, JSON vectors": lambda q: post({"query_vectors": [q.tolist()]}),
                "HTTP, base64 float32": lambda q: post(
                    {
                        "query_vectors_b64": [
                            base64.b64encode(q.astype(np.float32).tobytes()).decode()
                        ]
                    }
                ),
                "HTTP, GET /health (no search)": lambda q: call("GET", "/health"),
            }
            for _ in range(rounds):
                for name, run in ways.items():
                    for q in queries[:20]:
                        run(q)
                    times = []
                    for q in queries:
                        t0 = time.perf_counter()
                        run(q)
                        times.append(time.perf_counter() - t0)
                    row = _ms(times)
                    b = best.setdefault(name, row)
                    best[name] = {k: min(b[k], row[k]) for k in row}
        finally:
            server.terminate()
            server.wait(30)
    base = best["in process"]["p50_ms"]
    for row in best.values():
        row["p50_vs_in_process"] = row["p50_ms"] / base
    return {"muvera_version": __version__, "machine": machine(), "queries": len(queries),
            "documents": len(docs), "rounds": rounds, "ways": best}  # fmt: skip


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"{describe(r['machine'])}; SciFact, {r['documents']:,} documents, {r['queries']} "
        f"queries one at a time, k = 10, best of {r['rounds']} alternating rounds:",
        "",
        "| way | p50 ms | p95 ms | p50 vs in process |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in r["ways"].items():
        lines.append(
            f"| {name} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | "
            f"{row['p50_vs_in_process']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rounds", type=int, default=3)

    bench_main(__doc__, "server.json", lambda args: measure(args.rounds), markdown, arguments)


if __name__ == "__main__":
    main()
