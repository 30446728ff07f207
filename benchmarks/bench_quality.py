"""Quality of the default index against exact MaxSim, per dataset and token-space variant.

Protocol (printed with the results): the calibration threshold (anisotropy >= 0.5) and the
default candidate count were chosen on **SciFact train queries** (``qrels/train.tsv``,
with the ``aniso`` sweep below); **SciFact test** and **msmarco-mini** are held out and
only reported. Variants of the shared MiniLM-128 model's token vectors:

* ``orig``: as encoded (L2-normalised);
* ``aniso<s>``: ``s`` times one fixed random unit vector added to every token (documents
  and queries), then normalised again: a shared component like the ModernBERT models';
  ``s = 3`` makes the mean token's norm ~0.95 (exact MaxSim barely moves);
* ``raw``: encoded with ``normalize=False``.

For each: exact MaxSim nDCG@10 (brute force over float32 tokens); the default index
(hnswlib, ``calibration="auto"``) and the same with ``calibration="off"``, 100 candidates:
nDCG@10 as a fraction of exact, the share of the exact top-10 found, FDE-only nDCG@10,
p50 per query; and brute-force FDE search (exact store): share of the exact top-10 inside
the FDE top-100/200/500 with and without calibration.

``--sweep 100,200,300`` instead measures the default index at each candidate count (how the
default count was chosen: ``--cases`` of the tuning split, ``--out`` another file).

Usage: ``python benchmarks/bench_quality.py [--cases scifact:train:orig,...] [--sweep ...]``
(encodes what is missing into ``benchmarks/.cache`` first; ~15 min for all cases).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from encode_beir import SHARED, cache_path, encode, load_cached, split_tokens  # noqa: E402
from machine import describe, machine  # noqa: E402
from runner import bench_main  # noqa: E402

from muvera import FDEConfig, Index, __version__  # noqa: E402
from muvera.eval import load_qrels, ndcg_at_k  # noqa: E402
from muvera.index import DEFAULT_CANDIDATES  # noqa: E402
from muvera.scoring import maxsim_spans  # noqa: E402

MODEL = SHARED / "models" / "minilm-colbert-128"
CASES = (
    "scifact:train:orig,scifact:train:aniso3,scifact:train:aniso1,scifact:train:aniso0.5,"
    "scifact:train:raw,scifact:test:orig,scifact:test:aniso3,scifact:test:raw,"
    "msmarco-mini:test:orig,msmarco-mini:test:aniso3,msmarco-mini:test:raw"
)
TUNED_ON = "scifact:train"
CANDIDATES = DEFAULT_CANDIDATES  # the FDE-only default (token cells: bench_cells.py)


def load_case(name: str, split: str, variant: str) -> dict[str, Any]:
    data, raw = SHARED / "data" / name, variant == "raw"
    if not cache_path(data, MODEL, split, raw).is_file():
        if not cache_path(data, MODEL, "test", raw).is_file():
            encode(data, MODEL, 16, "cpu", "test", raw)
        if split != "test":
            encode(data, MODEL, 16, "cpu", split, raw)
    z = load_cached(data, MODEL, split, raw)
    docs, queries = z["doc_tokens"].astype(np.float32), z["query_tokens"].astype(np.float32)
    if variant.startswith("aniso"):
        shift = float(variant[len("aniso") :])
        u = np.random.default_rng(7).standard_normal(docs.shape[1]).astype(np.float32)
        u *= shift / np.linalg.norm(u)
        docs += u
        docs /= np.linalg.norm(docs, axis=1, keepdims=True)
        queries += u
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return {
        "docs": docs,
        "doc_lengths": z["doc_lengths"].astype(np.int64),
        "queries": queries,
        "query_lengths": z["query_lengths"].astype(np.int64),
        "doc_ids": [str(x) for x in z["doc_ids"]],
        "query_ids": [str(x) for x in z["query_ids"]],
        "qrels": load_qrels(data / "qrels" / f"{split}.tsv"),
    }


def found(top: np.ndarray, exact_top10: np.ndarray) -> float:
    pairs = zip(top, exact_top10, strict=True)
    return float(np.mean([len(set(t) & set(e)) / 10 for t, e in pairs]))


def prepare(case: str) -> dict[str, Any]:
    """A case's documents and queries, the exact MaxSim top-10 ids, exact nDCG@10 and an
    nDCG@10 function of (ids, scores) results."""
    name, split, variant = case.split(":")
    c = load_case(name, split, variant)
    offsets = np.concatenate([[0], np.cumsum(c["doc_lengths"])[:-1]]).astype(np.int64)
    q_offsets = np.concatenate([[0], np.cumsum(c["query_lengths"])]).astype(np.int64)
    exact = maxsim_spans(c["docs"], offsets, c["doc_lengths"], c["queries"], q_offsets)
    top = np.argsort(-exact, axis=1, kind="stable")[:, :100]
    doc_ids, qids = np.array(c["doc_ids"]), c["query_ids"]

    def ndcg(ids: np.ndarray, scores: np.ndarray) -> float:
        run = {
            qids[i]: {str(d): float(s) for d, s in zip(ids[i], scores[i], strict=True) if d != -1}
            for i in range(len(qids))
        }
        return ndcg_at_k(run, c["qrels"], 10)

    return {
        "docs": split_tokens(c["docs"], c["doc_lengths"]),
        "queries": split_tokens(c["queries"], c["query_lengths"]),
        "doc_ids": list(c["doc_ids"]),
        "dimension": c["docs"].shape[1],
        "exact_top10": doc_ids[top[:, :10]],
        "exact_ndcg": ndcg(doc_ids[top], np.take_along_axis(exact, top, 1)),
        "ndcg": ndcg,
    }


def one_at_a_time(index: Index, queries: list[np.ndarray], candidates: int) -> list[float]:
    """Milliseconds of each query searched alone (k=10)."""
    times = []
    for q in queries:
        t0 = time.perf_counter()
        index.search([q], k=10, candidates=candidates)
        times.append(1000 * (time.perf_counter() - t0))
    return times


def measure_case(case: str, candidates: int) -> dict[str, Any]:
    t = prepare(case)
    docs, queries, doc_ids, ndcg = t["docs"], t["queries"], t["doc_ids"], t["ndcg"]
    exact_top10, exact_ndcg = t["exact_top10"], t["exact_ndcg"]
    row: dict[str, Any] = {
        "case": case,
        "held_out": not case.startswith(TUNED_ON),
        "documents": len(docs),
        "queries": len(queries),
        "exact_ndcg@10": exact_ndcg,
        "candidates": candidates,
    }
    cfg = FDEConfig(dimension=t["dimension"])
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("auto", "off"):
            for store in ("hnswlib", "exact"):
                path = Path(tmp) / f"{mode}-{store}"
                with Index.create(path, cfg, store=store, calibration=mode) as index:
                    index.add(doc_ids, docs)
                    cal = index.calibration
                    if store == "exact":
                        top = index.search(queries, k=500, rerank=False).ids
                        for n in (100, 200, 500):
                            row[f"{mode}_bruteforce_found_{n}"] = found(top[:, :n], exact_top10)
                        continue
                    result = index.search(queries, k=10, candidates=candidates)
                    fde_only = index.search(queries, k=10, rerank=False)
                    times = one_at_a_time(index, queries, candidates)
                row[f"{mode}_calibration"] = cal.get("kind")
                if mode == "auto":
                    row["anisotropy"] = cal.get("anisotropy")
                    row["calibration_reason"] = cal.get("reason")
                row[f"{mode}_ndcg_ratio"] = ndcg(result.ids, result.scores) / exact_ndcg
                row[f"{mode}_found"] = found(result.ids, exact_top10)
                row[f"{mode}_fde_ndcg@10"] = ndcg(fde_only.ids, fde_only.scores)
                row[f"{mode}_p50_ms"] = float(np.median(times))
    print(row, file=sys.stderr, flush=True)
    return row


def sweep_case(case: str, counts: list[int]) -> dict[str, Any]:
    """The default index (hnswlib, auto calibration) at each candidate count."""
    t = prepare(case)
    queries, ndcg, exact_ndcg = t["queries"], t["ndcg"], t["exact_ndcg"]
    row: dict[str, Any] = {"case": case, "held_out": not case.startswith(TUNED_ON)}
    config = FDEConfig(dimension=t["dimension"])
    with tempfile.TemporaryDirectory() as tmp, Index.create(Path(tmp) / "ix", config) as index:
        index.add(t["doc_ids"], t["docs"])
        for n in counts:
            result = index.search(queries, k=10, candidates=n)
            times = one_at_a_time(index, queries, n)
            row[str(n)] = {
                "ndcg_ratio": ndcg(result.ids, result.scores) / exact_ndcg,
                "found": found(result.ids, t["exact_top10"]),
                "p50_ms": float(np.median(times)),
                "p95_ms": float(np.percentile(times, 95)),
            }
    print(row, file=sys.stderr, flush=True)
    return row


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.sweep:
        counts = [int(x) for x in args.sweep.split(",")]
        return {
            "machine": machine(),
            "muvera": __version__,
            "sweep": counts,
            "rows": [sweep_case(case, counts) for case in args.cases.split(",")],
        }
    rows = [measure_case(case, args.candidates) for case in args.cases.split(",")]
    return {
        "machine": machine(),
        "muvera": __version__,
        "protocol": (
            f"defaults (anisotropy threshold 0.5, {CANDIDATES} candidates) chosen on "
            f"{TUNED_ON} queries; every other case held out"
        ),
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    if "sweep" in result:
        counts = result["sweep"]
        lines = [
            f"{describe(result['machine'])}; muvera {result['muvera']}. Default index "
            "(hnswlib, calibration auto) at each candidate count: x exact MaxSim nDCG@10 / "
            "exact top-10 found / p50 ms / p95 ms.",
            "",
            "| case | held out | " + " | ".join(f"{n} candidates" for n in counts) + " |",
            "| --- | :-: |" + " ---: |" * len(counts),
        ]
        for r in result["rows"]:
            cells = [
                f"{r[str(n)]['ndcg_ratio']:.4f} / {r[str(n)]['found']:.1%} / "
                f"{r[str(n)]['p50_ms']:.2f} / {r[str(n)]['p95_ms']:.2f}"
                for n in counts
            ]
            held = "yes" if r["held_out"] else "tuning"
            lines.append(f"| {r['case']} | {held} | " + " | ".join(cells) + " |")
        return "\n".join(lines)
    lines = [
        f"{describe(result['machine'])}; muvera {result['muvera']}. Protocol: "
        f"{result['protocol']}. Index: hnswlib, FDE top-{result['rows'][0]['candidates']} "
        "+ MaxSim.",
        "",
        "| case | held out | anisotropy | calibration | exact nDCG@10 | default: x exact / "
        "exact top-10 found / FDE-only nDCG / p50 ms | calibration off: x exact / found | "
        "brute-force FDE top-100/200/500 found (default) | (off) |",
        "| --- | :-: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        brute = "/".join(f"{r[f'auto_bruteforce_found_{n}']:.1%}" for n in (100, 200, 500))
        off = "/".join(f"{r[f'off_bruteforce_found_{n}']:.1%}" for n in (100, 200, 500))
        lines.append(
            f"| {r['case']} | {'yes' if r['held_out'] else 'tuning'} | {r['anisotropy']:.3f} "
            f"| {r['auto_calibration']} | {r['exact_ndcg@10']:.4f} "
            f"| {r['auto_ndcg_ratio']:.4f} / {r['auto_found']:.1%} / "
            f"{r['auto_fde_ndcg@10']:.3f} / {r['auto_p50_ms']:.2f} "
            f"| {r['off_ndcg_ratio']:.4f} / {r['off_found']:.1%} | {brute} | {off} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", default=CASES, help="dataset:split:variant,...")
    parser.add_argument("--candidates", type=int, default=CANDIDATES, help="FDE candidates")
    parser.add_argument(
        "--sweep", help="comma-separated candidate counts: the default index at each instead"
    )


if __name__ == "__main__":
    bench_main(__doc__, "quality.json", measure, markdown, add_arguments)
