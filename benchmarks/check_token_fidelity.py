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
* ``residual int8``: 8 bits a value (132 instead of 68 bytes a token): what more bytes buy;
* ``residual4lm errors moved between tokens``: residual4lm's error of each token given to
  another (a random permutation of the tokens ranked, scaled by the ratio of their RMS):
  the same squared error, independent of the token it lands on;
* ``Lloyd-Max, 5 bits on W of D values``: a code of the budget's size (below): the
  budget's whole bytes a token, one of them a scale, the rest 4 bits a value and 5 bits
  for as many values as the bytes left allow (W), Lloyd-Max levels of 16 and 32, after a
  fixed random rotation; ``5 bits a value``: every value on 32 levels (over the budget);
* ``rate-distortion bound, R bits a value``: not a code but the least error any code of R
  bits a value can have on Gaussian values (Shannon's D(R) = variance x 2^-2R), simulated
  by its test channel: each token's residual ``r`` with mean square ``s`` becomes
  ``a r + sqrt(a D) z`` with ``D = s 2^-2R``, ``a = 1 - 2^-2R`` and ``z`` standard
  normal (squared error D a value, independent of the reconstruction). The residuals are
  close to Gaussian and isotropic (``check_residual_shape.py``: their kurtosis and what
  rotating them to their principal axes would gain), so no code of that size does
  clearly better. R = 4, 5 and the *budget rate*: the bits a value left if all of issue 16's
  12 KiB per document but the index's other files (FDE codes, graph, cell ids, records)
  went to the residual values, the per-token scale included.

``--candidates`` takes a list: the index is searched at each count, and the last column
(the index's candidates alone) is given for each; the ranked documents are the first
count's candidates plus the truth.

Usage: ``python benchmarks/check_token_fidelity.py INDEX [--queries 100] [--candidates
200[,300,...]] [--out benchmarks/results/token_fidelity_1m.json]``; ``--markdown FILE``
prints the table of a results file.
"""

from __future__ import annotations

import argparse
import json
import math
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
from muvera.token_codes import (  # noqa: E402
    LM_LEVELS,
    LM_MULTIPLIERS,
    decode_rows,
    encode_rows,
    row_bytes,
)

Quantizer = Callable[[np.ndarray], np.ndarray]
FIT_DOCS = 2000  # documents 0 .. FIT_DOCS: the residuals PLAID's buckets are fitted on
BUDGET_BYTES = 12 * 1024  # issue 16's disk budget per document


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


def _rd_bound(bits: float, seed: int) -> Quantizer:
    """The test channel of Gaussian rate-distortion at ``bits`` a value, per token: the
    residual scaled by ``1 - 2^-2R`` plus independent noise, squared error ``s 2^-2R`` a
    value for a token of mean square ``s`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    kept = 1.0 - 2.0 ** (-2.0 * bits)

    def channel(r: np.ndarray) -> np.ndarray:
        distortion = (r * r).mean(axis=1, keepdims=True) * 2.0 ** (-2.0 * bits)
        noise = rng.standard_normal(r.shape).astype(np.float32)
        return (kept * r + np.sqrt(kept * distortion) * noise).astype(np.float32)

    return channel


def _moved(code: Quantizer, seed: int) -> Quantizer:
    """``code``'s errors, each moved to another token of the batch (a random permutation)
    and scaled by the ratio of the two tokens' RMS: the same errors in size and shape,
    but independent of the token they land on."""
    rng = np.random.default_rng(seed)

    def moved(r: np.ndarray) -> np.ndarray:
        err = code(r) - r
        rms = np.sqrt((r * r).mean(axis=1, keepdims=True))
        unit = err / np.maximum(rms, np.float32(1e-20))
        return (r + unit[rng.permutation(len(r))] * rms).astype(np.float32)

    return moved


def _rotation(dimension: int, seed: int) -> np.ndarray:
    """A fixed random rotation, float32 ``(dimension, dimension)``."""
    rng = np.random.default_rng(seed)
    return np.linalg.qr(rng.standard_normal((dimension, dimension)))[0].astype(np.float32)


def _lloyd_max_levels(n: int, rounds: int = 3000) -> np.ndarray:
    """The ``n`` levels of the Lloyd-Max quantizer of a unit Gaussian (Max, 1960), by
    Lloyd's iteration on the density: cuts halfway between levels, each level the mean of
    its interval."""
    erf = np.frompyfunc(math.erf, 1, 1)
    levels = np.linspace(-2.5, 2.5, n)
    for _ in range(rounds):
        cuts = np.concatenate([[-np.inf], (levels[1:] + levels[:-1]) / 2, [np.inf]])
        pdf = np.exp(-(cuts**2) / 2) / math.sqrt(2 * math.pi)
        cdf = (1 + erf(cuts / math.sqrt(2)).astype(np.float64)) / 2
        levels = (pdf[:-1] - pdf[1:]) / (cdf[1:] - cdf[:-1])
    return levels.astype(np.float32)


def _mixed_lloyd_max(dimension: int, n_wide: int, rotate: bool = True) -> Quantizer:
    """A scalar code between 4 and 5 bits a value: residual4lm's (a scale of the row's RMS
    times the best of its eight multipliers, each value to its nearest Lloyd-Max level)
    with the first ``n_wide`` values of the row on 32 levels and the others on 16, after a
    fixed random rotation (so no coordinate is favoured)."""
    levels = [LM_LEVELS, _lloyd_max_levels(32)]
    cuts = [(v[1:] + v[:-1]) / np.float32(2) for v in levels]
    rot = _rotation(dimension, 17) if rotate else np.eye(dimension, dtype=np.float32)

    def code(r: np.ndarray) -> np.ndarray:
        z = r @ rot.T
        rms = np.sqrt((z * z).mean(axis=1, keepdims=True))
        best, least = np.zeros_like(z), np.full((len(z), 1), np.inf, np.float32)
        for m in LM_MULTIPLIERS:
            scale = rms * m  # a row of zeros: scale 0, decoded to zeros
            x = z / np.where(scale > 0, scale, np.float32(1))
            q = np.empty_like(z)  # each value on its own levels only
            q[:, :n_wide] = levels[1][np.searchsorted(cuts[1], x[:, :n_wide])]
            q[:, n_wide:] = levels[0][np.searchsorted(cuts[0], x[:, n_wide:])]
            q *= scale
            err = ((q - z) ** 2).sum(axis=1, keepdims=True)
            better = err < least
            best, least = np.where(better, q, best), np.minimum(err, least)
        return (best @ rot).astype(np.float32)

    return code


def budget_bits(index_dir: Path, n_docs: int, dimension: int) -> float:
    """Bits a residual value would get if 12 KiB per document went to the token file and
    to nothing else but the index's other files as they are (the token file's bytes are
    all counted as values: the per-token scale is given away)."""
    manifest = json.loads((index_dir / "manifest.json").read_text())
    tokens = manifest["tokens"]
    other = sum(f.stat().st_size for f in index_dir.iterdir() if f.is_file()) - tokens["bytes"]
    n_tokens = tokens["bytes"] // row_bytes(tokens["dtype"], dimension)
    return float((BUDGET_BYTES * n_docs - other) * 8 / (n_tokens * dimension))


def quantizers(
    dimension: int, sample: np.ndarray, budget: float | None = None
) -> dict[str, Quantizer]:
    rot = _rotation(dimension, 7)

    def stored(r: np.ndarray) -> np.ndarray:
        return decode_rows(encode_rows(r, "int4"), "int4", r.shape[1])

    schemes: dict[str, Quantizer] = {
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
    schemes["residual4lm errors moved between tokens"] = _moved(schemes["residual4lm"], 13)
    if budget is not None:  # whole bytes a token within the budget, one of them a scale
        n_wide = max(0, min(dimension, (int(budget * dimension / 8) - 1) * 8 - 4 * dimension))
        schemes[f"Lloyd-Max, 5 bits on {n_wide} of {dimension} values (12 KiB/doc budget)"] = (
            _mixed_lloyd_max(dimension, n_wide)
        )
    schemes["Lloyd-Max, 5 bits a value (over the budget)"] = _mixed_lloyd_max(dimension, dimension)
    for bits in (4.0, budget, 5.0):
        if bits is not None:
            label = f"{bits:.2f} (12 KiB/doc budget)" if bits == budget else f"{bits:g}"
            schemes[f"rate-distortion bound, {label} bits a value"] = _rd_bound(bits, 11)
    return schemes


def _maxsim(query: np.ndarray, tokens: np.ndarray, lengths: list[int]) -> np.ndarray:
    sims = query @ tokens.T
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.maximum.reduceat(sims, starts, axis=1).sum(axis=0)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.index is None:
        raise SystemExit("the index folder is required")
    counts = [int(c) for c in str(args.candidates).split(",")]
    corpus = TextLikeCorpus.from_cache()
    queries = corpus.queries(args.queries)
    with Index.open(args.index, mode="r") as index:
        n_docs = len(index)
        truth = ground_truth(corpus, n_docs, queries)
        cells = index.store.cells.cells
        if cells is None:
            raise SystemExit(f"{args.index}: no fitted token cells")
        budget = budget_bits(args.index, n_docs, corpus.dimension)
        fit = np.concatenate(corpus.documents(0, FIT_DOCS)).astype(np.float32)
        schemes = quantizers(corpus.dimension, fit - cells.fine[cells.assign(fit)], budget)
        found: dict[str, list[float]] = {name: [] for name in schemes}
        alone: dict[int, dict[str, list[float]]] = {c: {n: [] for n in schemes} for c in counts}
        error: dict[str, list[float]] = {name: [] for name in schemes}
        t0 = time.perf_counter()
        searched = {c: [index.search([q], k=c, candidates=c).ids[0] for q in queries]
                    for c in counts}  # fmt: skip
        search_s = time.perf_counter() - t0
    for i, (q, want) in enumerate(zip(queries, truth, strict=True)):
        hits = {c: np.asarray(searched[c][i][searched[c][i] >= 0], np.int64) for c in counts}
        docs = np.union1d(np.concatenate(list(hits.values())), want)
        first = np.isin(docs, np.union1d(hits[counts[0]], want))  # ranked for "found"
        tokens = [corpus._document(int(j)).astype(np.float32) for j in docs]
        lengths = [len(t) for t in tokens]
        x = np.concatenate(tokens)
        centroids = cells.fine[cells.assign(x)]
        residual = x - centroids
        among = {c: np.isin(docs, hits[c]) for c in counts}  # the index's candidates
        for name, quantize in schemes.items():
            y = centroids + quantize(residual)
            error[name].append(float(((y - x) ** 2).sum(axis=1).mean()))
            scores = _maxsim(q, y, lengths)
            top = docs[first][np.argsort(-scores[first], kind="stable")[:10]]
            found[name].append(len(set(top.tolist()) & set(want.tolist())) / 10)
            for c in counts:
                own = docs[among[c]][np.argsort(-scores[among[c]], kind="stable")[:10]]
                alone[c][name].append(len(set(own.tolist()) & set(want.tolist())) / 10)
    return {
        "machine": machine(), "index": str(args.index), "documents": n_docs,
        "queries": len(queries), "candidates": counts[0], "candidate_counts": counts,
        "budget_bits": budget, "search_s": search_s,
        "rows": [{"quantizer": name, "found": float(np.mean(found[name])),
                  "found_candidates": float(np.mean(alone[counts[0]][name])),
                  "found_by_candidates": {str(c): float(np.mean(alone[c][name]))
                                          for c in counts},
                  "mse_per_token": float(np.mean(error[name]))} for name in schemes],
    }  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    counts = result.get("candidate_counts", [result["candidates"]])
    alone_heads = (
        ["the same, the index's candidates alone"]
        if len(counts) == 1
        else [f"the index's top {c} alone" for c in counts]
    )
    lines = [
        f"{describe(result['machine'])}; {result['documents']:,} text-like documents, "
        f"{result['queries']} queries; ranked: the index's top {result['candidates']} plus "
        "the float16 exact top-10.",
        "",
        "| re-rank tokens | float16 exact top-10 found | "
        + " | ".join(alone_heads)
        + " | squared error per token |",
        "| --- | ---: | " + "---: | " * len(counts) + "---: |",
    ]
    for row in result["rows"]:
        by = row.get("found_by_candidates") or {str(counts[0]): row.get("found_candidates")}
        cells = ["-" if by.get(str(c)) is None else f"{by[str(c)]:.3f}" for c in counts]
        lines.append(
            f"| {row['quantizer']} | {row['found']:.3f} | "
            + " | ".join(cells)
            + f" | {row['mse_per_token']:.5f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", type=Path, nargs="?")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--candidates", default="200", help="a count or a list: 200,300")


def main() -> None:
    bench_main(__doc__ or "", "token_fidelity_1m.json", measure, markdown, add_arguments)


if __name__ == "__main__":
    main()
