"""How many scale multipliers residual4lm tries (``muvera.token_codes.LM_MULTIPLIERS``):
the relative squared error of token residuals coded by 16 Lloyd-Max levels at a scale of
the row's RMS times the best of several multiplier grids, against residual4 (uniform,
max|x| / 7) and residual4lm as shipped.

Residuals are each token minus its nearest centroid of a kept text-like index's token
cells (``bench_scale_text.py --keep``): the text-like corpus's documents 5,000-5,300 (the
tuning set the eight multipliers were chosen on), and, never seen by the choice, the
first 50,000 tokens of SciFact and of raw (unnormalised) msmarco-mini from the shared
model's cached vectors (``benchmarks/.cache``, written by ``bench_quality.py``), each
token's centroid taken at its direction and scaled by its norm.

Usage: ``python benchmarks/check_lm_scales.py INDEX [--out
benchmarks/results/lm_scales.json]``; ``--markdown FILE`` prints the table of a results
file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, machine  # noqa: E402
from runner import bench_main  # noqa: E402
from scale_corpus import TextLikeCorpus  # noqa: E402

from muvera import Index  # noqa: E402
from muvera.token_codes import LM_LEVELS, decode_rows, encode_rows  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
REAL = {  # name -> cached token file of the shared model
    "SciFact (held out)": "scifact-minilm-colbert-128.npz",
    "msmarco-mini raw (held out)": "msmarco-mini-minilm-colbert-128-raw.npz",
}
GRIDS = {
    "RMS alone": [1.0],
    "6: 0.85 .. 1.10": [0.85, 0.90, 0.95, 1.00, 1.05, 1.10],
    "8: 0.80 .. 1.15 (shipped)": [0.80, 0.85, 0.90, 0.95, 1.00, 1.05, 1.10, 1.15],
    "11: 0.80 .. 1.20": list(np.linspace(0.8, 1.2, 11)),
    "16: 0.70 .. 1.30": list(np.linspace(0.7, 1.3, 16)),
}
CUTS = ((LM_LEVELS[1:] + LM_LEVELS[:-1]) / 2).astype(np.float32)


def _grid(r: np.ndarray, multipliers: list[float]) -> np.ndarray:
    """Lloyd-Max levels at RMS x the multiplier of least squared error, per row."""
    rms = np.sqrt((r * r).mean(axis=1, keepdims=True))
    rms[rms == 0] = 1
    best, least = np.zeros_like(r), np.full(len(r), np.inf)
    for m in multipliers:
        s = rms * np.float32(m)
        y = LM_LEVELS[np.searchsorted(CUTS, r / s)] * s
        e = ((y - r) ** 2).sum(axis=1)
        take = e < least
        best[take], least[take] = y[take], e[take]
    return best


def residual_sets(index_path: Path) -> dict[str, np.ndarray]:
    corpus = TextLikeCorpus.from_cache()
    with Index.open(index_path, mode="r") as index:
        cells = index.store.cells.cells
        if cells is None:
            raise SystemExit(f"{index_path}: no fitted token cells")
        x = np.concatenate(corpus.documents(5000, 5300)).astype(np.float32)
        sets = {"text-like (tuning)": x - cells.fine[cells.assign(x)]}
        for name, file in REAL.items():
            with np.load(CACHE / file) as z:
                t = z["doc_tokens"][:50_000].astype(np.float32)
            norm = np.linalg.norm(t, axis=1, keepdims=True)
            sets[name] = t - cells.fine[cells.assign(t / norm)] * norm
    return sets


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.index is None:
        raise SystemExit("the index folder is required")
    rows = []
    for name, r in residual_sets(args.index).items():
        energy = float((r * r).sum(axis=1).mean())

        def rel(y: np.ndarray, r: np.ndarray = r, energy: float = energy) -> float:
            return float(((y - r) ** 2).sum(axis=1).mean()) / energy

        row = {"residuals": name, "tokens": len(r), "residual4": rel(
            decode_rows(encode_rows(r, "residual4"), "residual4", r.shape[1])
        ), "residual4lm": rel(
            decode_rows(encode_rows(r, "residual4lm"), "residual4lm", r.shape[1])
        )}  # fmt: skip
        row.update({grid: rel(_grid(r, ms)) for grid, ms in GRIDS.items()})
        rows.append(row)
    return {"machine": machine(), "index": str(args.index), "grids": list(GRIDS), "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    grids = result["grids"]
    lines = [
        f"{describe(result['machine'])}; relative squared error of token residuals "
        "(sum of squared errors / sum of squared residuals).",
        "",
        "| residuals | tokens | residual4 | " + " | ".join(f"Lloyd-Max, {g}" for g in grids)
        + " | residual4lm |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in grids) + " | ---: |",
    ]  # fmt: skip
    for row in result["rows"]:
        cells = " | ".join(f"{row[g]:.5f}" for g in grids)
        lines.append(f"| {row['residuals']} | {row['tokens']:,} | {row['residual4']:.5f} | "
                     f"{cells} | {row['residual4lm']:.5f} |")  # fmt: skip
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", type=Path, nargs="?")


def main() -> None:
    bench_main(__doc__ or "", "lm_scales.json", measure, markdown, add_arguments)


if __name__ == "__main__":
    main()
