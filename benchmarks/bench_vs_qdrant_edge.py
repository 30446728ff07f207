"""muvera vs Qdrant's own engine (Qdrant Edge, in process) on the same SciFact token vectors.

Both sides get the token vectors of ``../shared/models/minilm-colbert-128`` cached by
``encode_beir.py`` (5,183 documents, 300 test queries) and answer each query in two stages
at the same settings: FDE top-100 candidates from an HNSW graph, then exact MaxSim on the
candidates' token vectors, top 10 kept.

* muvera: ``Index.create(path, FDEConfig(dimension=128))``, the defaults (hnswlib store,
  float16 tokens); each query is ``index.search([tokens], k=10, candidates=100)`` on an
  index opened read-only.
* Qdrant Edge (``qdrant-edge-py``, Qdrant's Rust engine embedded in the process): the path
  Qdrant documents for MUVERA: fastembed's ``Muvera`` FDEs (same R=20, k_sim=5,
  dim_proj=16, seed 42) in a dense vector ``fde`` (Dot, Qdrant's default HNSW m=16,
  ef_construct=100), the token vectors in a multivector ``colbert`` (Dot, MaxSim, HNSW
  off with m=0, as Qdrant recommends for re-rank-only vectors), optimised into HNSW
  segments; each query is one ``QueryRequest`` with a ``Prefetch(limit=100)`` on ``fde``
  and the MaxSim query on ``colbert``. Everything else at Qdrant's defaults (float32
  vectors, search threads = CPUs).

Timings start from the query's token vectors: each side computes its own query FDE inside
the timed call (muvera's compiled encoder; fastembed's numpy ``process_query``), and the
engine-only times (query FDE precomputed) are reported beside them. Rounds alternate the
two engines (single queries one by one, then the whole query set as one batch:
``index.search(queries)`` and ``shard.query_batch``); per engine the best round's p50, p95
and batch queries/s are kept. nDCG@10 on the test qrels and the share of the exact-MaxSim
top 10 (brute force over all documents) found by each.

``--variants avx2,avx512`` runs the muvera side once per compiled-kernel variant (each in a
subprocess with ``MUVERA_CPU`` set; Qdrant is timed again in each, so every ratio comes
from one process). Prints a table and writes ``benchmarks/results/vs_qdrant_edge.json``.

Usage: ``python benchmarks/bench_vs_qdrant_edge.py [--rounds 3] [--variants auto]``
(needs ``pip install qdrant-edge-py fastembed``: benchmark-only dependencies).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "vs_qdrant_edge.json"
K, CANDIDATES = 10, 100


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(seconds)
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def top_run(
    ids: list[list[Any]], scores: list[list[float]], qids: list[str], doc_ids: list[str]
) -> dict:
    """A BEIR run (query id -> {document id: score}) from row numbers and scores."""
    return {
        q: {doc_ids[int(d)]: float(s) for d, s in zip(i, sc, strict=True) if int(d) >= 0}
        for q, i, sc in zip(qids, ids, scores, strict=True)
    }


class Muvera:
    """The muvera side: the default index, opened read-only."""

    name = "muvera"

    def __init__(self, where: Path, docs: list[np.ndarray]) -> None:
        from muvera import FDEConfig, Index

        t0 = time.perf_counter()
        with Index.create(where, FDEConfig(dimension=128)) as index:
            index.add(list(range(len(docs))), docs)
        self.build_s = time.perf_counter() - t0
        self.index = Index.open(where, mode="r")
        self.bytes = sum(p.stat().st_size for p in where.rglob("*") if p.is_file())
        self.fde_of = self.index.encoder.encode_queries

    def one(self, query: np.ndarray) -> tuple[list[Any], list[float]]:
        result = self.index.search([query], k=K, candidates=CANDIDATES)
        return result.ids[0].tolist(), result.scores[0].tolist()

    def engine_one(self, query: np.ndarray, fde: np.ndarray) -> None:
        # the store's two stages with the query FDE given (what Index.search runs after it)
        from muvera.batch import TokenBatch

        batch = TokenBatch.from_items([query])
        self.index.store.search(
            fde[None], batch, K, CANDIDATES, rerank=True, alive=self.index.records.alive
        )

    def batch(self, queries: list[np.ndarray]) -> tuple[list[list[Any]], list[list[float]]]:
        result = self.index.search(queries, k=K, candidates=CANDIDATES)
        return result.ids.tolist(), result.scores.tolist()


class QdrantEdge:
    """Qdrant's engine in process, set up as Qdrant's MUVERA guide does."""

    name = "qdrant-edge"

    def __init__(self, where: Path, docs: list[np.ndarray]) -> None:
        import qdrant_edge as qe
        from fastembed.postprocess import Muvera as FastembedMuvera

        self.qe = qe
        self.fde = FastembedMuvera(dim=128, k_sim=5, dim_proj=16, r_reps=20, random_seed=42)
        size = self.fde.embedding_size
        config = qe.EdgeConfig(
            vectors={
                "fde": qe.EdgeVectorParams(size=size, distance=qe.Distance.Dot),
                "colbert": qe.EdgeVectorParams(
                    size=128,
                    distance=qe.Distance.Dot,
                    multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
                    hnsw_config=qe.HnswIndexConfig(
                        m=0, ef_construct=100, full_scan_threshold=10000
                    ),
                ),
            }
        )
        t0 = time.perf_counter()
        self.shard = qe.EdgeShard.create(str(where), config)
        for first in range(0, len(docs), 256):
            points = [
                qe.Point(i, {"fde": self.fde.process_document(d).astype(np.float32), "colbert": d})
                for i, d in enumerate(docs[first : first + 256], start=first)
            ]
            self.shard.update(qe.UpdateOperation.upsert_points(points))
        self.shard.flush()
        self.shard.optimize()
        self.build_s = time.perf_counter() - t0
        info = self.shard.info()
        self.indexed = int(info.indexed_vectors_count)
        self.bytes = sum(p.stat().st_size for p in where.rglob("*") if p.is_file())

    def fde_of(self, queries: list[np.ndarray]) -> np.ndarray:
        return np.stack([self.fde.process_query(q).astype(np.float32) for q in queries])

    def _request(self, query: np.ndarray, fde: np.ndarray) -> Any:
        qe = self.qe
        return qe.QueryRequest(
            limit=K,
            prefetches=[qe.Prefetch(limit=CANDIDATES, query=qe.Query.Nearest(fde, using="fde"))],
            query=qe.Query.Nearest(query, using="colbert"),
        )

    def one(self, query: np.ndarray) -> tuple[list[Any], list[float]]:
        fde = self.fde.process_query(query).astype(np.float32)
        hits = self.shard.query(self._request(query, fde))
        return [h.id for h in hits], [h.score for h in hits]

    def engine_one(self, query: np.ndarray, fde: np.ndarray) -> None:
        self.shard.query(self._request(query, fde))

    def batch(self, queries: list[np.ndarray]) -> tuple[list[list[Any]], list[list[float]]]:
        requests = [self._request(q, f) for q, f in zip(queries, self.fde_of(queries), strict=True)]
        found = self.shard.query_batch(self.qe.QueryBatchRequest(requests))
        return [[h.id for h in hits] for hits in found], [[h.score for h in hits] for hits in found]


def stage_profile(index: Any, queries: list[np.ndarray]) -> dict[str, Any]:
    """Where a muvera query's time goes, query by query: the FDE walk alone (the
    candidates it returns with token cells on: half of them), then the whole
    ``Index.search`` call of the same query, split by its own timings (query FDE,
    candidates = walk + cells, re-rank), with the page faults and garbage collections met;
    p50/p95 per stage, and the mean of each over the 5% of queries whose whole search was
    slowest."""
    import gc
    import resource

    store, rows = index.store, []
    walk = -(-CANDIDATES // 2) if getattr(store, "uses_cells", False) else CANDIDATES
    gcs = [0]
    gc.callbacks.append(lambda phase, info: gcs.__setitem__(0, gcs[0] + (phase == "start")))
    for q in queries:
        t0 = time.perf_counter()
        store._candidates(index.encoder.encode_queries([q]), walk, False)
        t1 = time.perf_counter()
        r0, g0 = resource.getrusage(resource.RUSAGE_SELF), gcs[0]
        result = index.search([q], k=K, candidates=CANDIDATES)
        t2 = time.perf_counter()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        t = {k: v / 1000 for k, v in (result.timings or {}).items()}
        rows.append(
            [t1 - t0, t.get("fde_ms", 0.0), t.get("candidates_ms", 0.0), t.get("rerank_ms", 0.0),
             t2 - t1, r1.ru_minflt - r0.ru_minflt, r1.ru_majflt - r0.ru_majflt, gcs[0] - g0]
        )  # fmt: skip
    gc.callbacks.pop()
    a = np.array(rows)
    slow = a[:, 4] >= np.percentile(a[:, 4], 95)
    names = ["walk alone_ms", "fde_ms", "candidates_ms", "rerank_ms", "search_ms"]
    out: dict[str, Any] = {}
    for j, name in enumerate(names):
        ms = 1000 * a[:, j]
        out[name] = {
            "p50": float(np.percentile(ms, 50)),
            "p95": float(np.percentile(ms, 95)),
            "slowest_5pct_mean": float(ms[slow].mean()),
        }
    for j, name in enumerate(["minor_faults", "major_faults", "gc_runs"], start=5):
        out[name] = {"mean": float(a[:, j].mean()), "slowest_5pct_mean": float(a[slow, j].mean())}
    return out


def measure(rounds: int) -> dict[str, Any]:
    from encode_beir import SHARED, load_cached, split_tokens
    from machine import machine

    from muvera import __version__, maxsim
    from muvera.eval import load_qrels, ndcg_at_k

    data, model = SHARED / "data" / "scifact", SHARED / "models" / "minilm-colbert-128"
    cached = load_cached(data, model)
    docs = split_tokens(cached["doc_tokens"], cached["doc_lengths"])
    queries = split_tokens(cached["query_tokens"], cached["query_lengths"])
    doc_ids = [str(x) for x in cached["doc_ids"]]
    qids = [str(x) for x in cached["query_ids"]]
    qrels = load_qrels(data / "qrels" / "test.tsv")
    exact = maxsim(queries, docs)
    exact_top = np.argsort(-exact, axis=1, kind="stable")[:, :K]

    engines: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        engines = [Muvera(Path(tmp) / "muvera", docs), QdrantEdge(Path(tmp) / "edge", docs)]
        fdes = {e.name: e.fde_of(queries) for e in engines}
        best: dict[str, dict[str, Any]] = {e.name: {} for e in engines}
        for _ in range(rounds):
            for e in engines:
                for q in queries[:20]:  # warm-up: caches, thread pools
                    e.one(q)
                times, engine_times, ids, scores = [], [], [], []
                for q in queries:
                    t0 = time.perf_counter()
                    i, s = e.one(q)
                    times.append(time.perf_counter() - t0)
                    ids.append(i)
                    scores.append(s)
                for q, f in zip(queries, fdes[e.name], strict=True):
                    t0 = time.perf_counter()
                    e.engine_one(q, f)
                    engine_times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                batch_ids, _ = e.batch(queries)
                batch_qps = len(queries) / (time.perf_counter() - t0)
                row = {**percentiles(times), "batch_qps": batch_qps}
                row.update({f"engine_{k}": v for k, v in percentiles(engine_times).items()})
                b = best[e.name]
                for key, value in row.items():
                    better = max if key == "batch_qps" else min
                    b[key] = better(b.get(key, value), value)
                b["ndcg@10"] = ndcg_at_k(top_run(ids, scores, qids, doc_ids), qrels, 10)
                found = [
                    len(set(map(int, i)) & set(t.tolist())) / K
                    for i, t in zip(ids, exact_top, strict=True)
                ]
                b["exact_top10_found"] = float(np.mean(found))
                same = [list(map(int, x)) for x in batch_ids] == [list(map(int, x)) for x in ids]
                b["batch_equals_single"] = same
        profile = stage_profile(engines[0].index, queries)
        for e in engines:
            best[e.name].update(build_s=e.build_s, bytes_per_doc=e.bytes / len(docs))
        best["qdrant-edge"]["indexed_vectors"] = engines[1].indexed
    exact_scores = np.take_along_axis(exact, exact_top, 1).tolist()
    exact_ndcg = ndcg_at_k(top_run(exact_top.tolist(), exact_scores, qids, doc_ids), qrels, 10)

    return {
        "muvera_version": __version__,
        "qdrant_edge_version": _version("qdrant-edge-py"),
        "fastembed_version": _version("fastembed"),
        "machine": machine(),
        "rounds": rounds,
        "documents": len(docs),
        "queries": len(queries),
        "exact_maxsim_ndcg@10": exact_ndcg,
        "engines": best,
        "muvera_stages": profile,
    }


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def ratios(result: dict[str, Any]) -> dict[str, float]:
    m, q = result["engines"]["muvera"], result["engines"]["qdrant-edge"]
    return {
        "p50": m["p50_ms"] / q["p50_ms"],
        "p95": m["p95_ms"] / q["p95_ms"],
        "batch": m["batch_qps"] / q["batch_qps"],
        "muvera_p95_over_p50": m["p95_ms"] / m["p50_ms"],
    }


def markdown(results: dict[str, Any]) -> str:
    runs = results["runs"]
    first = next(iter(runs.values()))
    lines = [
        f"{first['machine']['cpu']} ({' '.join(first['machine']['flags'])}, "
        f"{first['machine']['cpus']} CPUs); SciFact, {first['documents']:,} documents, "
        f"{first['queries']} test queries, k = {K}, {CANDIDATES} candidates, best of "
        f"{first['rounds']} alternating rounds; qdrant-edge-py {first['qdrant_edge_version']}, "
        f"fastembed {first['fastembed_version']}; exact MaxSim nDCG@10 "
        f"{first['exact_maxsim_ndcg@10']:.4f}:",
        "",
        "| muvera kernels | engine | p50 ms | p95 ms | engine-only p50 / p95 ms | batch q/s "
        "| nDCG@10 | exact top-10 found | build s | KiB/doc |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant, run in runs.items():
        for name, e in run["engines"].items():
            lines.append(
                f"| {variant} | {name} | {e['p50_ms']:.2f} | {e['p95_ms']:.2f} | "
                f"{e['engine_p50_ms']:.2f} / {e['engine_p95_ms']:.2f} | {e['batch_qps']:,.0f} | "
                f"{e['ndcg@10']:.4f} | {e['exact_top10_found']:.3f} | {e['build_s']:.0f} | "
                f"{e['bytes_per_doc'] / 1024:.0f} |"
            )
    lines += [
        "",
        "| muvera kernels | p50 muvera / Qdrant | p95 muvera / Qdrant | batch q/s muvera / "
        "Qdrant | muvera p95 / p50 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for variant, run in runs.items():
        r = ratios(run)
        lines.append(
            f"| {variant} | {r['p50']:.2f}x | {r['p95']:.2f}x | {r['batch']:.2f}x | "
            f"{r['muvera_p95_over_p50']:.2f} |"
        )
    lines += [
        "",
        "Where muvera's time goes, query by query (ms; the slowest 5% of queries beside all):",
        "",
        "| muvera kernels | stage | p50 | p95 | slowest 5%: mean |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for variant, run in runs.items():
        for stage, v in run["muvera_stages"].items():
            if "p50" in v:
                lines.append(
                    f"| {variant} | {stage[:-3]} | {v['p50']:.3f} | {v['p95']:.3f} | "
                    f"{v['slowest_5pct_mean']:.3f} |"
                )
            else:
                lines.append(
                    f"| {variant} | {stage.replace('_', ' ')} per query | mean {v['mean']:.2f} "
                    f"| | {v['slowest_5pct_mean']:.2f} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variants",
        default="auto",
        help="comma-separated kernel variants to run muvera with (MUVERA_CPU), or 'auto'",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print a results table")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    if args.worker:
        print(json.dumps(measure(args.rounds)))
        return
    runs: dict[str, Any] = {}
    for variant in args.variants.split(","):
        env = dict(os.environ)
        if variant != "auto":
            env["MUVERA_CPU"] = variant
        out = subprocess.run(
            [sys.executable, __file__, "--worker", "--rounds", str(args.rounds)],
            check=True, capture_output=True, text=True, env=env,
        ).stdout  # fmt: skip
        run = json.loads(out.strip().splitlines()[-1])
        runs[run["machine"]["kernel_variant"]] = run
        print(markdown({"runs": {run["machine"]["kernel_variant"]: run}}), flush=True)
    results = {"runs": runs}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"wrote {args.out}")
    from render_docs import refresh

    refresh(args.out)


if __name__ == "__main__":
    main()
