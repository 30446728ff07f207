"""One measurement for ab_commits.py, run with PYTHONPATH set to the tree under test (so it
imports that tree's muvera). Uses only the public API that every version has. Prints JSON.

Tasks: ``fde`` (default-config FDE encoding rates), ``build`` (an hnswlib index of the
SciFact token cache), ``search`` (two-stage search latency and quality on that index).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def fde(repeats: int) -> dict[str, float]:
    from muvera import FDEConfig, FDEEncoder

    rng = np.random.default_rng(0)

    def clouds(n: int, t: int) -> list[np.ndarray]:
        x = rng.standard_normal((n, t, 128)).astype(np.float32)
        x /= np.linalg.norm(x, axis=2, keepdims=True)
        return list(x)

    docs, queries = clouds(2000, 180), clouds(2000, 32)
    config = FDEConfig(dimension=128, num_repetitions=20, num_simhash_projections=5,
                       projection_dimension=16, fill_empty_partitions=True)  # fmt: skip
    encoder = FDEEncoder(config)
    encoder.encode_documents(docs[:50])
    out = {}
    for name, batch, method in (("docs_per_s", docs, encoder.encode_documents),
                                ("queries_per_s", queries, encoder.encode_queries)):  # fmt: skip
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            method(batch)
            best = min(best, time.perf_counter() - t0)
        out[name] = len(batch) / best
    return out


def scifact() -> tuple[list[np.ndarray], list[np.ndarray], list[str], list[str]]:
    sys.path.insert(0, str(HERE))
    from encode_beir import SHARED, load_cached, split_tokens

    data, model = SHARED / "data" / "scifact", SHARED / "models" / "minilm-colbert-128"
    z = load_cached(data, model)
    docs = [d.astype(np.float32) for d in split_tokens(z["doc_tokens"], z["doc_lengths"])]
    queries = [q.astype(np.float32) for q in split_tokens(z["query_tokens"], z["query_lengths"])]
    return docs, queries, [str(x) for x in z["doc_ids"]], [str(x) for x in z["query_ids"]]


def build(path: Path) -> dict[str, float]:
    from muvera import FDEConfig, Index

    docs, _, doc_ids, _ = scifact()
    t0 = time.perf_counter()
    with Index.create(path, FDEConfig(dimension=docs[0].shape[1])) as index:
        index.add(doc_ids, docs)
    return {"build_s": time.perf_counter() - t0}


def search(path: Path, repeats: int) -> dict[str, float]:
    from muvera import Index

    sys.path.insert(0, str(HERE))
    from encode_beir import SHARED

    _, queries, _, qids = scifact()
    index = Index.open(path, mode="r")
    for q in queries[:20]:
        index.search([q], k=10)  # warm-up: pages, pools
    times = []
    run = {}
    for _ in range(repeats):
        for qid, q in zip(qids, queries, strict=True):
            t0 = time.perf_counter()
            hit = index.search([q], k=10, candidates=100)
            times.append(time.perf_counter() - t0)
            run[qid] = {str(d): float(s) for d, s in zip(hit.ids[0], hit.scores[0], strict=True)}
    exact = index.search_exact(queries, k=10)
    shared = np.mean([
        len(set(run[qid]) & {str(d) for d in exact.ids[i]}) / 10 for i, qid in enumerate(qids)
    ])  # fmt: skip
    try:
        from muvera.eval import load_qrels, ndcg_at_k
    except ImportError:  # older layout
        from muvera.evaluation import load_qrels, ndcg_at_k  # type: ignore[no-redef]
    qrels = load_qrels(SHARED / "data" / "scifact" / "qrels" / "test.tsv")
    ms = 1000 * np.asarray(times)
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "ndcg10": ndcg_at_k(run, {q: qrels[q] for q in qids if q in qrels}, 10),
        "exact_top10_found": float(shared),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["fde", "build", "search"])
    parser.add_argument("--index", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from machine import machine

    if args.task == "fde":
        out = fde(args.repeats)
    elif args.task == "build":
        out = build(args.index)
    else:
        out = search(args.index, args.repeats)
    print(json.dumps({**out, "machine": machine()}))


if __name__ == "__main__":
    main()
