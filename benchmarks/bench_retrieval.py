"""Two-stage retrieval on SciFact: exact MaxSim vs FDE-only vs FDE + re-rank, per store.

Uses the token vectors of ``../shared/models/minilm-colbert-128`` cached by
``encode_beir.py`` (encoded on first use). For each store (exact, hnswlib, qdrant local
mode) an index is built with the default FDE config and queried one query at a time:
nDCG@10, recall@100, the share of the exact-MaxSim top-10 inside the candidates, p50/p95
latency per query (FDE encoding + candidate search + re-rank; the text encoding of the
query is excluded), build time and bytes per document. Two brute-force baselines: numpy
(the float32 corpus in RAM, one matrix product and a segmented max per query) and the
index's own ``search_exact`` (the compiled MaxSim kernel over the stored tokens, when
built); speed-ups are reported against both, twice: p50 over p50, each timed in a loop of
its own, and the median per-query ratio with the search and the brute force of the same
query timed one right after the other (first 100 queries; the brute force leaves the
caches cold for the next search). A second table compares FDE
configurations (filling, final projection, seeds) with brute-force FDE search.
Prints tables and writes ``benchmarks/results/retrieval_scifact.json``.

Usage: ``python benchmarks/bench_retrieval.py [--stores exact,hnswlib,qdrant] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from encode_beir import SHARED, cache_path, encode, load_cached, split_tokens  # noqa: E402
from machine import describe, dir_bytes, machine  # noqa: E402

from muvera import FDEConfig, FDEEncoder, Index, __version__, maxsim  # noqa: E402
from muvera.eval import load_qrels, ndcg_at_k, recall_at_k  # noqa: E402


def run_from_scores(scores: np.ndarray, qids: list[str], doc_ids: list[str], k: int = 100) -> dict:
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return {qids[i]: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i in range(len(qids))}


def run_from_result(ids: np.ndarray, scores: np.ndarray, qids: list[str]) -> dict:
    return {
        qids[i]: {str(d): float(s) for d, s in zip(ids[i], scores[i], strict=True) if d != -1}
        for i in range(len(qids))
    }


def percentiles(values: list[float]) -> dict:
    ms = 1000 * np.asarray(values)
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


class BruteForce:
    """Exact MaxSim over the whole corpus for one query: the float32 corpus held in RAM,
    one matrix product and a segmented max (the fastest layout for the whole corpus among
    those tried: about 112 ms, against 131-182 ms for the row-wise variants)."""

    def __init__(self, docs):
        self.flat = np.concatenate(docs)
        lengths = np.array([len(d) for d in docs])
        self.starts = np.cumsum(lengths) - lengths

    def __call__(self, query):
        scores = np.maximum.reduceat(query @ self.flat.T, self.starts, axis=1).sum(axis=0)
        return np.argpartition(-scores, 100)[:100]


def bench_store(spec, docs, doc_ids, queries, qids, qrels, exact_top10, candidates, tmp, brute):
    """``spec`` is a store name, optionally with the token dtype and store options:
    "hnswlib/float32", "hnswlib@M=12", "hnswlib@quantization=none" (default dtype: the
    library's, float16)."""
    name, _, opts = spec.partition("@")
    store, _, dtype = name.partition("/")
    dtype = dtype or "float16"
    options = {
        k: int(v) if v.isdigit() else v for k, v in (o.split("=") for o in opts.split(",") if o)
    } or None
    if store == "qdrant":
        options = {"location": ":memory:"}
    cfg = FDEConfig(dimension=docs[0].shape[1])
    directory = Path(tmp) / spec.replace("/", "-").replace("@", "-").replace(",", "-")
    t0 = time.perf_counter()
    index = Index.create(directory, cfg, store=store, store_options=options, token_dtype=dtype)
    index.add(doc_ids, docs)
    build = time.perf_counter() - t0
    row = {"store": spec, "token_dtype": dtype, "build_seconds": build, "documents": len(docs)}
    if store != "qdrant":
        row["bytes_per_document"] = dir_bytes(directory) / len(docs)
    # FDE only: top-100 by FDE score
    ids, scores, lat = [], [], []
    for q in queries:
        t0 = time.perf_counter()
        r = index.search([q], k=100, candidates=100, rerank=False)
        lat.append(time.perf_counter() - t0)
        ids.append(r.ids[0])
        scores.append(r.scores[0])
    run = run_from_result(np.array(ids), np.array(scores), qids)
    if store != "qdrant":  # qdrant local mode's full scan is pure Python: not a baseline
        exact_lat = []
        for q in queries[:60]:
            t0 = time.perf_counter()
            index.search_exact([q], k=100)
            exact_lat.append(time.perf_counter() - t0)
        row["search_exact"] = percentiles(exact_lat)
    row["fde_only"] = {
        "ndcg@10": ndcg_at_k(run, qrels, 10),
        "recall@100": recall_at_k(run, qrels, 100),
        "exact_top10_in_top100": float(
            np.mean(
                [len(set(exact_top10[i]) & {str(x) for x in ids[i]}) / 10 for i in range(len(qids))]
            )
        ),
        **percentiles(lat),
    }
    for c in candidates:
        ids, scores, lat, inside, ratios, exact_ratios = [], [], [], [], [], []
        brute_ms, exact_ms = [], []
        for i, q in enumerate(queries):  # latency: every query, one after the other
            t0 = time.perf_counter()
            r = index.search([q], k=100, candidates=max(c, 100))
            lat.append(time.perf_counter() - t0)
            ids.append(r.ids[0])
            scores.append(r.scores[0])
            if c >= 100:
                inside.append(len(set(exact_top10[i]) & {str(x) for x in r.ids[0][:c]}) / 10)
        if c == candidates[0]:
            # interleaved: each brute force timed right after the search of the same query,
            # so both see the same machine state (the brute force leaves the caches cold)
            for q in queries[:100]:
                t0 = time.perf_counter()
                index.search([q], k=100, candidates=max(c, 100))
                searched = time.perf_counter() - t0
                t0 = time.perf_counter()
                brute(q)
                brute_ms.append(time.perf_counter() - t0)
                ratios.append(brute_ms[-1] / searched)
                if store != "qdrant":
                    t0 = time.perf_counter()
                    index.search_exact([q], k=100)
                    exact_ms.append(time.perf_counter() - t0)
                    exact_ratios.append(exact_ms[-1] / searched)
        run = run_from_result(np.array(ids), np.array(scores), qids)
        row[f"rerank_{c}"] = {
            **({"interleaved_speedup_median": float(np.median(ratios))} if ratios else {}),
            **(
                {"interleaved_speedup_vs_search_exact_median": float(np.median(exact_ratios))}
                if exact_ratios
                else {}
            ),
            **(
                {"interleaved_numpy_brute_force_p50_ms": 1000 * float(np.median(brute_ms))}
                if brute_ms
                else {}
            ),
            **(
                {"interleaved_search_exact_p50_ms": 1000 * float(np.median(exact_ms))}
                if exact_ms
                else {}
            ),
            "ndcg@10": ndcg_at_k(run, qrels, 10),
            "recall@100": recall_at_k(run, qrels, 100),
            "exact_top10_found": float(np.mean(inside)),
            **percentiles(lat),
        }
    index.close()
    return row


def bench_configs(docs, queries, qids, doc_ids, qrels, exact, exact_ndcg, candidates):
    """Brute-force FDE search for several FDE configurations (quality only)."""
    d = docs[0].shape[1]
    configs = [
        ("default (R20 k5 AMS16)", FDEConfig(dimension=d)),
        ("+ fill_empty_partitions", FDEConfig(dimension=d, fill_empty_partitions=True)),
        (
            "R40 -> Count-Sketch 10240",
            FDEConfig(dimension=d, num_repetitions=40, final_projection_dimension=10240),
        ),
        (
            "R20 k4 AMS32",
            FDEConfig(dimension=d, num_simhash_projections=4, projection_dimension=32),
        ),
        ("default, seed 7", FDEConfig(dimension=d, seed=7)),
        ("default, seed 1234", FDEConfig(dimension=d, seed=1234)),
    ]
    rows = []
    exact_top10 = np.argsort(-exact, axis=1)[:, :10]
    for name, cfg in configs:
        enc = FDEEncoder(cfg)
        fde = enc.encode_queries(queries) @ enc.encode_documents(docs).T
        order = np.argsort(-fde, axis=1, kind="stable")
        row = {
            "name": name,
            "config": cfg.to_dict(),
            "fde_ndcg@10": ndcg_at_k(run_from_scores(fde, qids, doc_ids), qrels, 10),
            "fde_recall@100": recall_at_k(run_from_scores(fde, qids, doc_ids), qrels, 100),
        }
        rows_idx = np.arange(len(queries))[:, None]
        for c in candidates:
            cand = order[:, :c]
            masked = np.full_like(exact, -np.inf)
            masked[rows_idx, cand] = exact[rows_idx, cand]
            row[f"rerank_{c}_ndcg_ratio"] = (
                ndcg_at_k(run_from_scores(masked, qids, doc_ids), qrels, 10) / exact_ndcg
            )
            row[f"exact_top10_in_{c}"] = float(
                np.mean([len(set(exact_top10[i]) & set(cand[i])) / 10 for i in range(len(queries))])
            )
        rows.append(row)
        print(f"config {name}: {row}", file=sys.stderr)
    return rows


def _speedups(base_ms, m, interleaved_key):
    """'p50 ratio / interleaved median ratio' of a baseline vs a stage's timing ``m``."""
    if base_ms is None:
        return "-"
    text = f"{base_ms / m['p50_ms']:.1f}x"
    inter = m.get(interleaved_key)
    return text if inter is None else f"{text} / {inter:.1f}x"


def markdown(result: dict) -> str:
    ex = result["exact"]
    lines = [
        f"Exact MaxSim (brute force over all {result['documents']:,} documents): nDCG@10 "
        f"{ex['ndcg@10']:.3f}, recall@100 {ex['recall@100']:.3f}; numpy brute force "
        f"{ex['p50_ms']:.1f} ms per query (p50), {ex['p95_ms']:.1f} ms (p95).",
        "",
        "| store | stage | nDCG@10 | x exact | recall@100 | exact top-10 found | p50 ms "
        "| p95 ms | vs numpy brute force: p50 / interleaved "
        "| vs the index's search_exact: p50 / interleaved |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["stores"]:
        own = row.get("search_exact")
        for key in ["fde_only"] + [f"rerank_{c}" for c in result["candidates"]]:
            m = row[key]
            stage = (
                "FDE only (top 100)"
                if key == "fde_only"
                else f"FDE top-{key.split('_')[1]} + MaxSim"
            )
            found = m.get("exact_top10_in_top100", m.get("exact_top10_found"))
            ratio = m["ndcg@10"] / ex["ndcg@10"]

            numpy_cell = _speedups(ex["p50_ms"], m, "interleaved_speedup_median")
            own_cell = _speedups(
                own["p50_ms"] if own else None, m, "interleaved_speedup_vs_search_exact_median"
            )
            lines.append(
                f"| {row['store']} | {stage} | {m['ndcg@10']:.3f} | {ratio:.3f} "
                f"| {m['recall@100']:.3f} | {found:.1%} | {m['p50_ms']:.2f} | {m['p95_ms']:.2f} "
                f"| {numpy_cell} | {own_cell} |"
            )
    own_rows = [r for r in result["stores"] if r.get("search_exact")]
    if own_rows:
        lines += [
            "",
            "`Index.search_exact` (brute-force exact MaxSim over the stored tokens) per index: "
            + ", ".join(f"{r['store']} {r['search_exact']['p50_ms']:.1f} ms p50" for r in own_rows)
            + ".",
        ]
    lines += ["", "| store / token dtype | build (s) | bytes / document |", "| --- | ---: | ---: |"]
    for row in result["stores"]:
        b = row.get("bytes_per_document")
        lines.append(
            f"| {row['store']} | {row['build_seconds']:.1f} | {'-' if b is None else f'{b:,.0f}'} |"
        )
    lines += [
        "",
        "| FDE config (brute-force FDE search) | FDE nDCG@10 | "
        + " | ".join(f"re-rank top-{c}: x exact / exact top-10 found" for c in result["candidates"])
        + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in result["candidates"]) + " |",
    ]
    for row in result["configs"]:
        cells = " | ".join(
            f"{row[f'rerank_{c}_ndcg_ratio']:.4f} / {row[f'exact_top10_in_{c}']:.1%}"
            for c in result["candidates"]
        )
        lines.append(f"| {row['name']} | {row['fde_ndcg@10']:.3f} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "scifact")
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "minilm-colbert-128")
    parser.add_argument(
        "--stores", default="exact,hnswlib,hnswlib@quantization=none,hnswlib/float32,qdrant"
    )
    parser.add_argument("--candidates", default="100,200,500")
    parser.add_argument("--quick", action="store_true", help="first 50 queries only")
    parser.add_argument("--no-configs", action="store_true", help="skip the FDE config table")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "retrieval_scifact.json"
    )
    parser.add_argument(
        "--markdown", type=Path, metavar="JSON", help="print the README tables of a results file"
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    print(describe(machine()))
    if not cache_path(args.data, args.model).is_file():
        encode(args.data, args.model, batch_size=16, device="cpu")
    z = load_cached(args.data, args.model)
    docs = [d.astype(np.float32) for d in split_tokens(z["doc_tokens"], z["doc_lengths"])]
    queries = [q.astype(np.float32) for q in split_tokens(z["query_tokens"], z["query_lengths"])]
    doc_ids = [str(x) for x in z["doc_ids"]]
    qids = [str(x) for x in z["query_ids"]]
    if args.quick:
        queries, qids = queries[:50], qids[:50]
    qrels = load_qrels(args.data / "qrels" / "test.tsv")
    qrels = {q: qrels[q] for q in qids if q in qrels}
    candidates = [int(c) for c in args.candidates.split(",")]

    # Exact MaxSim: the ground truth, and the brute-force latency one query at a time
    # (float32 corpus held in RAM, one matrix product and a segmented max per query).
    exact = maxsim(queries, docs)
    brute = BruteForce(docs)
    lat = []
    for q in queries[:60]:
        t0 = time.perf_counter()
        brute(q)
        lat.append(time.perf_counter() - t0)
    exact_run = run_from_scores(exact, qids, doc_ids)
    exact_ndcg = ndcg_at_k(exact_run, qrels, 10)
    result = {
        "muvera_version": __version__,
        "kernel": FDEEncoder(FDEConfig(dimension=docs[0].shape[1])).kernel,
        "machine": machine(),
        "dataset": args.data.name,
        "model": args.model.name,
        "documents": len(docs),
        "queries": len(queries),
        "candidates": candidates,
        "exact": {
            "ndcg@10": exact_ndcg,
            "recall@100": recall_at_k(exact_run, qrels, 100),
            **percentiles(lat),
        },
    }
    print(f"exact: {result['exact']}", file=sys.stderr)
    exact_top10 = [[doc_ids[j] for j in row] for row in np.argsort(-exact, axis=1)[:, :10]]
    result["stores"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for store in args.stores.split(","):
            row = bench_store(
                store, docs, doc_ids, queries, qids, qrels, exact_top10, candidates, tmp, brute
            )
            result["stores"].append(row)
            print(f"store {store}: {row}", file=sys.stderr)
    result["configs"] = (
        []
        if args.no_configs
        else bench_configs(docs, queries, qids, doc_ids, qrels, exact, exact_ndcg, candidates)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"wrote {args.out}")
    refresh_docs(args.out)  # the docs/ tables built from this file


def refresh_docs(results_file: Path) -> None:
    """Re-render the docs/ tables built from ``results_file`` (benchmarks/render_docs.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from render_docs import refresh

    refresh(results_file)


if __name__ == "__main__":
    main()
