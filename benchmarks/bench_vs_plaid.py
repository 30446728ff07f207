"""muvera against PyLate's PLAID (fast-plaid backend, CPU) on the same token vectors, in one
run: build time, disk per document, a fresh reader's RSS, per-query p50 / p95 (one query
at a time, after a warm-up pass), the share of the exact MaxSim top-10 found, and nDCG@10
where the corpus has relevance judgements.

Corpora: ``text-like:N`` (``scale_corpus.py``: N documents resampled from the shared
model's real token vectors, 200 real queries) or ``scifact`` (the shared model's SciFact
encodings, test queries and qrels). Engines: ``muvera`` (the default index), ``muvera-int8``
(int8 token codes, FDE R=40 projected to 4,096 dims: the first large-corpus recipe of
docs/performance.md), ``muvera-residual4`` / ``muvera-residual2`` (4- or 2-bit residual
token codes against the token cells, FDE projected to 2,048 dims: the 10^6 recipes),
``muvera-int8-2048`` (int8 token codes, the same FDE: about PLAID's bytes per document),
``plaid`` (``pylate.indexes.PLAID`` defaults: nbits=4,
n_ivf_probe=8, n_full_scores=8192). muvera builds with ``Index.bulk()`` (one commit), in
batches of 10,000 documents; PLAID from all documents in one ``add_documents`` call.

PLAID runs in another Python environment (``--plaid-python``: one with ``pylate`` and
``fast-plaid`` installed; their pins differ from muvera's), through ``plaid_worker.py``.

Usage: ``python benchmarks/bench_vs_plaid.py --corpus text-like:100000
--plaid-python /path/to/venv/bin/python``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scale_text import ground_truth  # noqa: E402
from encode_beir import SHARED, load_cached, split_tokens  # noqa: E402
from machine import describe, dir_bytes, machine  # noqa: E402
from runner import bench_main  # noqa: E402
from scale_corpus import MODEL, TextLikeCorpus  # noqa: E402

from muvera import FDEConfig, Index, __version__  # noqa: E402
from muvera.eval import load_qrels, ndcg_at_k  # noqa: E402
from muvera.scoring import maxsim_spans  # noqa: E402

ENGINES: dict[str, dict[str, Any]] = {
    "muvera": {},
    "muvera-int8": {
        "token_dtype": "int8",
        "num_repetitions": 40,
        "final_projection_dimension": 4096,
    },
    # the 10^6 recipes of docs/performance.md: 2,048-dim FDE, 2- or 4-bit residual tokens
    "muvera-residual4": {"token_dtype": "residual4", "final_projection_dimension": 2048},
    "muvera-residual2": {"token_dtype": "residual2", "final_projection_dimension": 2048},
    # int8 tokens beside the same 2,048-dim FDE: about PLAID's bytes (4-bit residuals)
    "muvera-int8-2048": {"token_dtype": "int8", "final_projection_dimension": 2048},
}
BATCH = 10_000
PLAID_FULL_SCORES = (8192, 256)  # PyLate's default; Stanford PLAID's setting for k=10


def load_corpus(spec: str, tmp: Path, n_queries: int) -> dict[str, Any]:
    """Tokens written once to ``tmp`` (raw float16 rows + int64 lengths) for every engine,
    queries, the exact top-10 document numbers, and qrels (None for text-like corpora)."""
    tokens_file, lengths_file = tmp / "tokens.f16", tmp / "lengths.npy"
    if spec.startswith("text-like:"):
        n = int(spec.split(":")[1])
        corpus = TextLikeCorpus.from_cache()
        queries = corpus.queries(n_queries)
        parts = []
        with tokens_file.open("wb") as fh:
            for start in range(0, n, BATCH):
                docs = corpus.documents(start, min(n, start + BATCH))
                parts.append(np.array([len(d) for d in docs], np.int64))
                fh.write(np.concatenate(docs).astype(np.float16).tobytes())
        lengths = np.concatenate(parts)
        truth = ground_truth(corpus, n, queries)
        qrels, query_ids, doc_ids = None, None, [str(i) for i in range(n)]
    else:
        data = SHARED / "data" / spec
        z = load_cached(data, MODEL)
        lengths = z["doc_lengths"].astype(np.int64)
        z["doc_tokens"].astype(np.float16).tofile(tokens_file)
        queries = [
            q.astype(np.float32) for q in split_tokens(z["query_tokens"], z["query_lengths"])
        ]
        offsets = np.cumsum(lengths) - lengths
        q_off = np.concatenate([[0], np.cumsum([len(q) for q in queries])]).astype(np.int64)
        exact = maxsim_spans(z["doc_tokens"].astype(np.float16), offsets, lengths,
                             np.concatenate(queries), q_off)  # fmt: skip
        truth = np.argsort(-exact, axis=1, kind="stable")[:, :10]
        qrels = load_qrels(data / "qrels" / "test.tsv")
        query_ids, doc_ids = [str(x) for x in z["query_ids"]], [str(x) for x in z["doc_ids"]]
    np.save(lengths_file, lengths)
    np.savez(tmp / "queries.npz", *queries)
    return {"tokens": tokens_file, "lengths": lengths_file, "queries": tmp / "queries.npz",
            "n": len(lengths), "truth": truth, "qrels": qrels, "query_ids": query_ids,
            "doc_ids": doc_ids}  # fmt: skip


def run_muvera(name: str, c: dict[str, Any], folder: Path) -> dict[str, Any]:
    opts = dict(ENGINES[name])
    token_dtype = opts.pop("token_dtype", "float16")
    store_options = opts.pop("store_options", None)
    lengths = np.load(c["lengths"])
    tokens = np.memmap(c["tokens"], dtype=np.float16, mode="r").reshape(int(lengths.sum()), -1)
    offsets = np.cumsum(lengths) - lengths
    t0 = time.perf_counter()
    with Index.create(folder, FDEConfig(dimension=tokens.shape[1], **opts),
                      token_dtype=token_dtype, store_options=store_options,
                      ) as index, index.bulk():  # fmt: skip
        for start in range(0, len(lengths), BATCH):
            stop = min(len(lengths), start + BATCH)
            block = np.asarray(tokens[offsets[start] : offsets[stop - 1] + lengths[stop - 1]])
            docs = np.split(block, np.cumsum(lengths[start:stop])[:-1])
            index.add(list(range(start, stop)), docs)
    build_s = time.perf_counter() - t0
    reader = json.loads(subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_scale_text.py"), "--reader",
         str(folder), str(c["queries"])], capture_output=True, text=True, check=True,
    ).stdout)  # fmt: skip
    return {"build_s": build_s, "disk": dir_bytes(folder), **reader}


def run_plaid(python: str, c: dict[str, Any], folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """One PLAID build, searched with each of PLAID_FULL_SCORES: a result per setting."""
    worker = str(ROOT / "benchmarks" / "plaid_worker.py")
    built, searched = folder.parent / "plaid_build.json", folder.parent / "plaid_search.json"
    subprocess.run([python, worker, "build", str(c["tokens"]), str(c["lengths"]), str(folder),
                    str(built)], check=True)  # fmt: skip
    subprocess.run([python, worker, "search", str(c["queries"]), str(folder), str(searched),
                    ",".join(map(str, PLAID_FULL_SCORES))], check=True)  # fmt: skip
    build, search = json.loads(built.read_text()), json.loads(searched.read_text())
    common = {"build_s": build["build_s"], "disk": dir_bytes(folder),
              "rss_open": search["rss_open"], "rss_peak": search["rss_peak"]}  # fmt: skip
    return [(f"plaid (n_full_scores={n})", {**common, **search["runs"][str(n)]})
            for n in PLAID_FULL_SCORES]  # fmt: skip


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        c = load_corpus(args.corpus, tmp, args.queries)
        for engine in args.engines.split(","):
            folder = tmp / engine
            if engine == "plaid":
                results = run_plaid(args.plaid_python, c, folder)
            else:
                results = [(engine, run_muvera(engine, c, folder))]
            for name, r in results:
                rows.append(_row(name, r, c))
            subprocess.run(["rm", "-rf", str(folder)], check=False)
    return {"machine": machine(), "muvera": __version__, "corpus": args.corpus,
            "queries": len(c["truth"]), "rows": rows}  # fmt: skip


def _row(engine: str, r: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    ids = [[int(x) for x in row] for row in r["ids"]]
    found = [len(set(i) & set(t)) / 10 for i, t in zip(ids, c["truth"].tolist(), strict=True)]
    row = {
        "engine": engine,
        "documents": c["n"],
        "build_s": r["build_s"],
        "docs_per_s": c["n"] / r["build_s"],
        "bytes_per_doc": r["disk"] / c["n"],
        "reader_rss_after_open": r["rss_open"],
        "reader_peak_rss": r["rss_peak"],
        "p50_ms": float(np.percentile(r["times_ms"], 50)),
        "p95_ms": float(np.percentile(r["times_ms"], 95)),
        "exact_top10_found": float(np.mean(found)),
    }
    if c["qrels"] is not None:
        run = {
            c["query_ids"][q]: {c["doc_ids"][d]: 10.0 - rank for rank, d in enumerate(i) if d >= 0}
            for q, i in enumerate(ids)
        }
        row["ndcg@10"] = ndcg_at_k(run, c["qrels"], 10)
    print(row, file=sys.stderr, flush=True)
    return row


def markdown(result: dict[str, Any]) -> str:
    gib = 2**30
    lines = [
        f"{describe(result['machine'])}; muvera {result['muvera']}. Corpus "
        f"{result['corpus']}, {result['queries']} queries one at a time; exact top-10 by brute "
        "force on the float16 tokens.",
        "",
        "| engine | documents | build s (docs/s) | build x first row | KiB/doc on disk "
        "| reader RSS GiB (open / peak) | p50 / p95 ms | p50 x first row | exact top-10 found "
        "| nDCG@10 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    first = result["rows"][0] if result["rows"] else {}
    for r in result["rows"]:
        ndcg = f"{r['ndcg@10']:.4f}" if "ndcg@10" in r else "-"
        lines.append(
            f"| {r['engine']} | {r['documents']:,} | {r['build_s']:.0f} ({r['docs_per_s']:.0f}) "
            f"| {r['build_s'] / first['build_s']:.1f} | {r['bytes_per_doc'] / 1024:.1f} "
            f"| {r['reader_rss_after_open'] / gib:.2f} / {r['reader_peak_rss'] / gib:.2f} "
            f"| {r['p50_ms']:.1f} / {r['p95_ms']:.1f} | {r['p50_ms'] / first['p50_ms']:.1f} "
            f"| {r['exact_top10_found']:.3f} | {ndcg} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", default="text-like:100000")
    parser.add_argument(
        "--engines", default="muvera,muvera-int8-2048,muvera-residual4,muvera-residual2,plaid"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--plaid-python", default=sys.executable,
                        help="a Python with pylate and fast-plaid")  # fmt: skip
    parser.add_argument("--tmp", default=None, help="where the token file and indexes go")


if __name__ == "__main__":
    bench_main(__doc__, "vs_plaid.json", measure, markdown, add_arguments)
