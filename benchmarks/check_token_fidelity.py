"""How much of the float16 exact top-10 a re-rank on 4-bit residual tokens can keep at all,
on a kept text-like index (``bench_scale_text.py --keep``, token cells fitted), and
whether another 4-bit quantizer of the same size would keep more.

Per query of the fixed sample: the documents to rank are the index's own top
``--candidates`` (``Index.search``) plus every document of the cached float16 brute-force
top-10 (the truth), so a re-rank that scored exactly would find all of it. Their float
tokens are regenerated (the corpus is deterministic per document), each token's residual
from its nearest centroid of the index's cells is quantized by each quantizer, and the
share of the truth in the top-10 of each re-rank is reported with the mean squared error
per token (tokens are unit vectors), and the share in the top-10 of the index's own
candidates alone: what an index of the same documents storing those codes returns (its
first stage, the FDE and the cells, does not depend on the token codes):

* ``float32``: the tokens as generated (the bar: 1.000 by construction);
* ``residual4``: what the index stores (``muvera.token_codes`` int4 rows of the residual:
  a step of max|r| / 7 per token, codes -7 .. 7);
* ``residual4lm``: the token dtype of that name (the same bytes: 16 Lloyd-Max levels of a
  unit Gaussian at a scale of the row's RMS times the best of eight multipliers);
* ``rms step, 15 levels``: a step of 0.37 x the row's root mean square (codes -7 .. 7
  clipped), closer to the least-squares uniform quantizer for Gaussian values;
* ``rms step, 16 levels``: the least-squares uniform 16-level quantizer for Gaussian
  values (step 0.3352 x RMS, levels at half steps; Max, 1960);
* ``rotated + residual4`` / ``rotated + rms 16``: a fixed random rotation of the residual
  first (spreads a heavy coordinate over all of them, as RaBitQ-style codes do);
* ``PLAID buckets``: PLAID's 4-bit residual codes, 16 buckets of equal frequency fitted
  on the residuals of the corpus's first ``FIT_DOCS`` documents, a value decoded to its
  bucket's median, one set for every value or one per dimension (no per-token scale);
* ``residual int8``: 8 bits a value (132 instead of 68 bytes a token): what more bytes buy.

Usage: ``python benchmarks/check_token_fidelity.py INDEX [--queries 100] [--candidates 200]
[--out benchmarks/results/token_fidelity_1m.json]``; ``--markdown FILE`` prints the table
of a results file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scale_text import ground_truth  # noqa: E402
from machine import describe, machine  # noqa: E402
from runner import bench_main  # noqa: E402
from scale_corpus import TextLikeCorpus  # noqa: E402

from muvera import Index  # noqa: E402
from muvera.token_codes import decode_rows, encode_rows  # noqa: E402

Quantizer = Callable[[np.ndarray], np.ndarray]
FIT_DOCS = 2000  # documents 0 .. FIT_DOCS: the residuals PLAID's buckets are fitted on


def _rms_step(r: np.ndarray, factor: float, levels: int) -> np.ndarray:
    """Uniform quantizer of step ``factor x RMS(row)``: 15 levels (codes -7 .. 7) or 16
    (half steps, -7.5 .. 7.5)."""
    step = np.sqrt((r * r).mean(axis=1, keepdims=True)) * np.float32(factor)
    step[step == 0] = 1
    if levels == 15:
        return np.clip(np.rint(r / step), -7, 7) * step
    return (np.clip(np.floor(r / step), -8, 7) + 0.5) * step


def _buckets(sample: np.ndarray, per_dimension: bool) -> Quantizer:
    """PLAID's residual codes: 16 buckets of equal frequency on ``sample`` (residuals),
    each value decoded to its bucket's median; one set for all values, or one per
    dimension. No per-token scale (4 bytes a token fewer than residual4)."""
    axis = 0 if per_dimension else None
    cutoffs = np.quantile(sample, np.arange(1, 16) / 16, axis=axis).astype(np.float32)
    weights = np.quantile(sample, (np.arange(16) + 0.5) / 16, axis=axis).astype(np.float32)
    if not per_dimension:
        return lambda r: weights[np.searchsorted(cutoffs, r)]

    def per_dim(r: np.ndarray) -> np.ndarray:
        out = np.empty_like(r)
        for j in range(r.shape[1]):
            out[:, j] = weights[np.searchsorted(cutoffs[:, j], r[:, j]), j]
        return out

    return per_dim


def quantizers(dimension: int, sample: np.ndarray) -> dict[str, Quantizer]:
    rotation, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((dimension, dimension)))
    rot = rotation.astype(np.float32)

    def stored(r: np.ndarray) -> np.ndarray:
        return decode_rows(encode_rows(r, "int4"), "int4", r.shape[1])

    return {
        "float32": lambda r: r,
        "residual4 (stored)": stored,
        "residual4lm": lambda r: decode_rows(
            encode_rows(r, "residual4lm"), "residual4lm", r.shape[1]
        ),
        "rms step, 15 levels": lambda r: _rms_step(r, 0.37, 15),
        "rms step, 16 levels": lambda r: _rms_step(r, 0.3352, 16),
        "rotated + residual4": lambda r: stored(r @ rot.T) @ rot,
        "rotated + rms 16": lambda r: _rms_step(r @ rot.T, 0.3352, 16) @ rot,
        "PLAID buckets, 16 (one set)": _buckets(sample, per_dimension=False),
        "PLAID buckets, 16 per dimension": _buckets(sample, per_dimension=True),
        "residual int8 (twice the bytes)": lambda r: decode_rows(
            encode_rows(r, "int8"), "int8", r.shape[1]
        ),
    }


def _maxsim(query: np.ndarray, tokens: np.ndarray, lengths: list[int]) -> np.ndarray:
    sims = query @ tokens.T
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.maximum.reduceat(sims, starts, axis=1).sum(axis=0)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.index is None:
        raise SystemExit("the index folder is required")
    corpus = TextLikeCorpus.from_cache()
    queries = corpus.queries(args.queries)
    with Index.open(args.index, mode="r") as index:
        n_docs = len(index)
        truth = ground_truth(corpus, n_docs, queries)
        cells = index.store.cells.cells
        if cells is None:
            raise SystemExit(f"{args.index}: no fitted token cells")
        fit = np.concatenate(corpus.documents(0, FIT_DOCS)).astype(np.float32)
        schemes = quantizers(corpus.dimension, fit - cells.fine[cells.assign(fit)])
        found: dict[str, list[float]] = {name: [] for name in schemes}
        alone: dict[str, list[float]] = {name: [] for name in schemes}
        error: dict[str, list[float]] = {name: [] for name in schemes}
        t0 = time.perf_counter()
        searched = [index.search([q], k=args.candidates, candidates=args.candidates).ids[0]
                    for q in queries]  # fmt: skip
        search_s = time.perf_counter() - t0
    for q, ids, want in zip(queries, searched, truth, strict=True):
        docs = np.union1d(np.asarray(ids[ids >= 0], np.int64), want)
        among = np.isin(docs, ids)  # the index's candidates
        tokens = [corpus._document(int(j)).astype(np.float32) for j in docs]
        lengths = [len(t) for t in tokens]
        x = np.concatenate(tokens)
        centroids = cells.fine[cells.assign(x)]
        residual = x - centroids
        for name, quantize in schemes.items():
            y = centroids + quantize(residual)
            error[name].append(float(((y - x) ** 2).sum(axis=1).mean()))
            scores = _maxsim(q, y, lengths)
            top = docs[np.argsort(-scores, kind="stable")[:10]]
            found[name].append(len(set(top.tolist()) & set(want.tolist())) / 10)
            own = docs[among][np.argsort(-scores[among], kind="stable")[:10]]
            alone[name].append(len(set(own.tolist()) & set(want.tolist())) / 10)
    return {
        "machine": machine(), "index": str(args.index), "documents": n_docs,
        "queries": len(queries), "candidates": args.candidates, "search_s": search_s,
        "rows": [{"quantizer": name, "found": float(np.mean(found[name])),
                  "found_candidates": float(np.mean(alone[name])),
                  "mse_per_token": float(np.mean(error[name]))} for name in schemes],
    }  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{describe(result['machine'])}; {result['documents']:,} text-like documents, "
        f"{result['queries']} queries; ranked: the index's top {result['candidates']} plus "
        "the float16 exact top-10.",
        "",
        "| re-rank tokens | float16 exact top-10 found | the same, the index's candidates "
        "alone | squared error per token |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        own = row.get("found_candidates")  # not recorded before residual4lm
        alone = "-" if own is None else f"{own:.3f}"
        lines.append(
            f"| {row['quantizer']} | {row['found']:.3f} | {alone} | {row['mse_per_token']:.5f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", type=Path, nargs="?")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=200)


def main() -> None:
    bench_main(__doc__ or "", "token_fidelity_1m.json", measure, markdown, add_arguments)


if __name__ == "__main__":
    main()
