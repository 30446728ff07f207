"""muvera against PyLate's PLAID (fast-plaid backend, CPU) on the same token vectors, in one
run: build time, disk per document, a fresh reader's RSS, per-query p50 / p95 (one query
at a time, after a warm-up pass), the share of the exact MaxSim top-10 found, and nDCG@10
where the corpus has relevance judgements.

Corpora: ``text-like:N`` (``scale_corpus.py``: N documents resampled from the shared
model's real token vectors, 200 real queries) or ``scifact`` (the shared model's SciFact
encodings, test queries and qrels). Engines: ``muvera`` (the default index), ``muvera-int8``
(int8 token codes, FDE R=40 projected to 4,096 dims: the first large-corpus recipe of
docs/performance.md), ``muvera-residual4`` / ``muvera-residual2`` (4- or 2-bit residual
token codes against the token cells, FDE projected to 2,048 dims: the earlier 10^6
recipes), ``muvera-residual4lm`` (README's 10^6 recipe: residual4lm token codes, FDE
projected to 1,024 dims, 32,768 token cells), ``muvera-int8-2048`` (int8 token codes, a
2,048-dim FDE: about PLAID's bytes per document), ``plaid`` (``pylate.indexes.PLAID``
defaults: nbits=4, n_ivf_probe=8; searched with each ``--full-scores`` value). muvera
builds with ``Index.bulk()`` (one commit), in batches of 10,000 documents; PLAID from all
documents in one ``add_documents`` call.

PLAID runs in another Python environment (``--plaid-python``: one with ``pylate`` and
``fast-plaid`` installed; their pins differ from muvera's), through ``plaid_worker.py``.

On a machine with a GPU, ``--plaid-build-device cuda`` builds PLAID's index on it (its
k-means and compression; a 10^5-document CPU build takes hours on 2 cores) and
``--plaid-search-devices cpu,cuda`` adds rows searching it on the GPU. ``--search-cpus
0,1`` pins every reader process (both engines' searches) to those CPUs, with thread pools
sized to match, so that latencies compare on equal CPUs whatever the machine has;
``--build-cpus`` does the same for muvera's build; ``--plaid-cpu-build-limit S`` then
also times PLAID's CPU build, stopped after S seconds. ``--workers`` generates the text-like
documents in that many processes (the same documents: each is derived from its number).

Usage: ``python benchmarks/bench_vs_plaid.py --corpus text-like:100000
--plaid-python /path/to/venv/bin/python``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
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
    # README's 10^6 recipe: residual4lm tokens, 1,024-dim FDE, 32,768 token cells
    "muvera-residual4lm": {
        "token_dtype": "residual4lm",
        "final_projection_dimension": 1024,
        "store_options": {"token_cells": 32768},
    },
}
BATCH = 10_000
PLAID_FULL_SCORES = (8192, 256)  # PyLate's default; Stanford PLAID's setting for k=10


_CORPUS: TextLikeCorpus | None = None  # the generator, shared with forked workers


def _write_block(args: tuple[int, int, str]) -> np.ndarray:
    """Documents ``start .. stop`` written to ``path`` as float16 rows; their lengths."""
    start, stop, path = args
    if _CORPUS is None:  # pragma: no cover - set before the workers fork
        raise RuntimeError("no corpus")
    docs = _CORPUS.documents(start, stop)
    np.concatenate(docs).astype(np.float16).tofile(path)
    return np.array([len(d) for d in docs], np.int64)


def _generate(n: int, tokens_file: Path, workers: int) -> np.ndarray:
    """Documents 0 .. n into ``tokens_file`` (blocks in ``workers`` processes, joined in
    order); their lengths."""
    blocks = [(a, min(n, a + BATCH), f"{tokens_file}.{a}") for a in range(0, n, BATCH)]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_write_block, blocks, chunksize=1)
    else:
        parts = [_write_block(b) for b in blocks]
    with tokens_file.open("wb") as out:
        for _, _, part in blocks:
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 24)
            os.unlink(part)
    return np.concatenate(parts)


def exact_top10(tokens_file: Path, lengths: np.ndarray, queries: list[np.ndarray]) -> np.ndarray:
    """Exact MaxSim top-10 document numbers of every query, brute force over the float16
    rows of ``tokens_file`` (what every engine indexes), a block of documents at a time."""
    tokens = np.memmap(tokens_file, dtype=np.float16, mode="r").reshape(int(lengths.sum()), -1)
    offsets = np.cumsum(lengths) - lengths
    q_all = np.concatenate(queries)
    q_off = np.concatenate([[0], np.cumsum([len(q) for q in queries])]).astype(np.int64)
    best = np.full((len(queries), 10), -1, np.int64)
    best_s = np.full((len(queries), 10), -np.inf, np.float32)
    for start in range(0, len(lengths), BATCH):
        stop = min(len(lengths), start + BATCH)
        block = np.asarray(tokens[offsets[start] : offsets[stop - 1] + lengths[stop - 1]])
        scores = maxsim_spans(block, offsets[start:stop] - offsets[start], lengths[start:stop],
                              q_all, q_off)  # fmt: skip
        ids = np.broadcast_to(np.arange(start, stop), scores.shape)
        all_s, all_i = np.concatenate([best_s, scores], 1), np.concatenate([best, ids], 1)
        top = np.argsort(-all_s, axis=1, kind="stable")[:, :10]
        best_s, best = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    return best


def load_corpus(spec: str, tmp: Path, n_queries: int, workers: int = 1) -> dict[str, Any]:
    """Tokens written once to ``tmp`` (raw float16 rows + int64 lengths) for every engine,
    queries, the exact top-10 document numbers, and qrels (None for text-like corpora)."""
    global _CORPUS
    tokens_file, lengths_file = tmp / "tokens.f16", tmp / "lengths.npy"
    if spec.startswith("text-like:"):
        n = int(spec.split(":")[1])
        _CORPUS = TextLikeCorpus.from_cache()
        queries = _CORPUS.queries(n_queries)
        lengths = _generate(n, tokens_file, workers)
        truth = exact_top10(tokens_file, lengths, queries)
        qrels, query_ids, doc_ids = None, None, [str(i) for i in range(n)]
    else:
        data = SHARED / "data" / spec
        z = load_cached(data, MODEL)
        lengths = z["doc_lengths"].astype(np.int64)
        z["doc_tokens"].astype(np.float16).tofile(tokens_file)
        queries = [
            q.astype(np.float32) for q in split_tokens(z["query_tokens"], z["query_lengths"])
        ]
        truth = exact_top10(tokens_file, lengths, queries)
        qrels = load_qrels(data / "qrels" / "test.tsv")
        query_ids, doc_ids = [str(x) for x in z["query_ids"]], [str(x) for x in z["doc_ids"]]
    np.save(lengths_file, lengths)
    np.savez(tmp / "queries.npz", *queries)
    return {"tokens": tokens_file, "lengths": lengths_file, "queries": tmp / "queries.npz",
            "n": len(lengths), "truth": truth, "qrels": qrels, "query_ids": query_ids,
            "doc_ids": doc_ids}  # fmt: skip


def pinned(cpus: list[int] | None) -> dict[str, Any]:
    """``subprocess`` arguments running a child on ``cpus`` only (None: anywhere), its thread
    pools (OpenMP, BLAS, torch, rayon) sized to them."""
    if not cpus:
        return {}
    n = str(len(cpus))
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")
    env = {**os.environ, **dict.fromkeys(names, n)}
    return {"env": env, "preexec_fn": lambda: os.sched_setaffinity(0, cpus)}


def run_muvera(name: str, c: dict[str, Any], folder: Path, args: argparse.Namespace,
               ) -> dict[str, Any]:  # fmt: skip
    opts = dict(ENGINES[name])
    token_dtype = opts.pop("token_dtype", "float16")
    store_options = opts.pop("store_options", None)
    lengths = np.load(c["lengths"])
    tokens = np.memmap(c["tokens"], dtype=np.float16, mode="r").reshape(int(lengths.sum()), -1)
    offsets = np.cumsum(lengths) - lengths
    everywhere = os.sched_getaffinity(0)
    if args.build_cpus:
        os.sched_setaffinity(0, args.build_cpus)
    try:
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
    finally:
        os.sched_setaffinity(0, everywhere)
    reader = json.loads(subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_scale_text.py"), "--reader",
         str(folder), str(c["queries"])], capture_output=True, text=True, check=True,
        **pinned(args.search_cpus),
    ).stdout)  # fmt: skip
    return {"build_s": build_s, "disk": dir_bytes(folder), "build_device": "cpu",
            "search_device": "cpu", **reader}  # fmt: skip


PLAID_WORKER = ROOT / "benchmarks" / "plaid_worker.py"


def _plaid_build(c: dict[str, Any], folder: Path, out: Path, args: argparse.Namespace,
                 device: str | None = None) -> list[str]:  # fmt: skip
    """The worker's build command line (on ``device``, default ``--plaid-build-device``)."""
    return [args.plaid_python, str(PLAID_WORKER), "build", str(c["tokens"]), str(c["lengths"]),
            str(folder), str(out), device or args.plaid_build_device]  # fmt: skip


def run_plaid(c: dict[str, Any], folder: Path, args: argparse.Namespace,
              ) -> list[tuple[str, dict[str, Any]]]:  # fmt: skip
    """One PLAID build, searched on each of ``args.plaid_search_devices`` with each of
    ``args.full_scores``: a result per pair."""
    worker = str(PLAID_WORKER)
    built = folder.parent / "plaid_build.json"
    subprocess.run(_plaid_build(c, folder, built, args), check=True)
    build = json.loads(built.read_text())
    out = []
    for device in args.plaid_search_devices.split(","):
        searched = folder.parent / f"plaid_search_{device}.json"
        subprocess.run([args.plaid_python, worker, "search", str(c["queries"]), str(folder),
                        str(searched), ",".join(map(str, args.full_scores)), device,
                        str(args.plaid_warmup)],
                       check=True, **pinned(args.search_cpus))  # fmt: skip
        search = json.loads(searched.read_text())
        common = {"build_s": build["build_s"], "disk": dir_bytes(folder),
                  "rss_open": search["rss_open"], "rss_peak": search["rss_peak"],
                  "build_device": args.plaid_build_device, "search_device": device}  # fmt: skip
        out += [(f"plaid (n_full_scores={n}, search on {device})",
                 {**common, **search["runs"][str(n)]}) for n in args.full_scores]  # fmt: skip
    return out


def plaid_cpu_build(c: dict[str, Any], folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """PLAID's build on the CPU (all this process's CPUs), stopped after
    ``args.plaid_cpu_build_limit`` seconds: its seconds, or None when it had not finished
    (the worker process's whole run, reading the tokens included)."""
    command = _plaid_build(c, folder, folder.parent / "plaid_cpu_build.json", args, "cpu")
    t0 = time.perf_counter()
    try:
        subprocess.run(command, check=True, timeout=args.plaid_cpu_build_limit)
        seconds: float | None = time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        seconds = None
    return {"limit_s": args.plaid_cpu_build_limit, "build_s": seconds,
            "cpus": len(os.sched_getaffinity(0))}  # fmt: skip


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        c = load_corpus(args.corpus, tmp, args.queries, args.workers)
        print(f"corpus and exact top-10: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        failed = []
        for engine in args.engines.split(","):
            folder = tmp / engine
            try:
                if engine == "plaid":
                    results = run_plaid(c, folder, args)
                else:
                    results = [(engine, run_muvera(engine, c, folder, args))]
            except subprocess.CalledProcessError as e:  # the other engines still run
                print(f"{engine} failed: {e}", file=sys.stderr, flush=True)
                failed.append(engine)
                results = []
            for name, r in results:
                rows.append(_row(name, r, c))
            subprocess.run(["rm", "-rf", str(folder)], check=False)
            partial = args.out.with_suffix(".partial.json")  # what is measured so far
            partial.write_text(json.dumps({"corpus": args.corpus, "rows": rows}) + "\n")
        cpu_build = None
        if args.plaid_cpu_build_limit:
            cpu_build = plaid_cpu_build(c, tmp / "plaid-cpu", args)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (the others: {partial})")
    return {"machine": machine(), "muvera": __version__, "corpus": args.corpus,
            "queries": len(c["truth"]), "search_cpus": args.search_cpus,
            "build_cpus": args.build_cpus, "rows": rows,
            "plaid_cpu_build": cpu_build}  # fmt: skip


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
        "build_device": r.get("build_device", "cpu"),
        "search_device": r.get("search_device", "cpu"),
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
        f"force on the float16 tokens.{_where(result)}",
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
            f"| {_ratio(r['build_s'] / first['build_s'])} | {r['bytes_per_doc'] / 1024:.1f} "
            f"| {r['reader_rss_after_open'] / gib:.2f} / {r['reader_peak_rss'] / gib:.2f} "
            f"| {r['p50_ms']:.1f} / {r['p95_ms']:.1f} | {_ratio(r['p50_ms'] / first['p50_ms'])} "
            f"| {r['exact_top10_found']:.3f} | {ndcg} |"
        )
    if cpu := result.get("plaid_cpu_build"):
        lines += ["", f"PLAID's build on the CPU ({cpu['cpus']} CPUs, no GPU): " + (
            f"{cpu['build_s']:.0f} s" if cpu["build_s"] is not None
            else f"not finished after {cpu['limit_s']:.0f} s (stopped there)")]  # fmt: skip
    return "\n".join(lines)


def _ratio(x: float) -> str:
    return f"{x:.1f}" if x >= 0.1 else f"{x:.3f}"


def _where(result: dict[str, Any]) -> str:
    """Which devices and CPUs built and searched, where a run says (GPU runs only)."""
    notes = []
    if result.get("build_cpus"):
        notes.append(f"muvera built on CPUs {result['build_cpus']}")
    gpu = {r["engine"].split(" ")[0] for r in result["rows"] if r.get("build_device") == "cuda"}
    if gpu:
        notes.append(f"{', '.join(sorted(gpu))} built on the GPU, muvera on the CPU")
    if result.get("search_cpus"):
        notes.append(f"every CPU search pinned to CPUs {result['search_cpus']}")
    return (" " + "; ".join(notes) + ".") if notes else ""


def _cpus(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", default="text-like:100000")
    parser.add_argument(
        "--engines", default="muvera,muvera-int8-2048,muvera-residual4,muvera-residual2,plaid"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--plaid-python", default=sys.executable,
                        help="a Python with pylate and fast-plaid")  # fmt: skip
    parser.add_argument("--tmp", default=None, help="where the token file and indexes go")
    parser.add_argument("--workers", type=int, default=1, help="processes generating documents")
    parser.add_argument("--plaid-build-device", default="cpu", help="cpu or cuda")
    parser.add_argument("--plaid-search-devices", default="cpu", help="e.g. cpu,cuda")
    parser.add_argument("--plaid-warmup", type=int, default=-1,
                        help="queries PLAID's warm-up pass searches (default: all)")  # fmt: skip
    parser.add_argument("--plaid-cpu-build-limit", type=float, default=None,
                        help="also build PLAID on the CPU, stopped after S seconds")  # fmt: skip
    parser.add_argument("--full-scores", type=_cpus, default=list(PLAID_FULL_SCORES),
                        help="PLAID n_full_scores values searched, e.g. 8192,256")  # fmt: skip
    parser.add_argument("--search-cpus", type=_cpus, default=None,
                        help="pin every reader process to these CPUs, e.g. 0,1")  # fmt: skip
    parser.add_argument("--build-cpus", type=_cpus, default=None,
                        help="pin muvera's build to these CPUs")  # fmt: skip


if __name__ == "__main__":
    bench_main(__doc__, "vs_plaid.json", measure, markdown, add_arguments)
