"""How Gaussian and how isotropic the token residuals of a kept text-like index are (their
differences from the nearest centroid of the index's cells), for the rate-distortion rows
of ``check_token_fidelity.py``: over the tokens of the corpus's first ``--docs``
documents, each residual scaled to unit RMS, the kurtosis of the values (3 for Gaussian
values) and the coding gain of rotating them to their principal axes (arithmetic over
geometric mean of the covariance's eigenvalues, in dB: what a transform code could gain
over coding the values as they are; 0 for isotropic residuals).

Usage: ``python benchmarks/check_residual_shape.py INDEX [--docs 2000] [--out
benchmarks/results/residual_shape_1m.json]``; ``--markdown FILE`` prints the table of a
results file.
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


def shape(residuals: np.ndarray) -> dict[str, float]:
    """Kurtosis and principal-axes coding gain (dB) of ``residuals`` float32 ``(n, d)``,
    rows of zeros left out, each row scaled to unit RMS.

    >>> x = np.random.default_rng(0).standard_normal((20000, 128)).astype(np.float32)
    >>> s = shape(x)
    >>> round(s["kurtosis"], 1), s["coding_gain_db"] < 0.05
    (3.0, True)
    >>> x[:, :64] *= 2  # variances 4 and 1: 10 log10(2.5 / 2) dB
    >>> round(shape(x)["coding_gain_db"], 1)
    1.0
    """
    rms = np.sqrt((residuals.astype(np.float64) ** 2).mean(axis=1))
    unit = residuals[rms > 0] / rms[rms > 0, None]
    eig = np.linalg.eigvalsh(np.cov(unit.T))
    return {
        "tokens": float(len(residuals)), "zero_rows": float((rms == 0).sum()),
        "kurtosis": float((unit**4).mean() / (unit**2).mean() ** 2),
        "coding_gain_db": float(10 * np.log10(eig.mean() / np.exp(np.log(eig).mean()))),
        "eigen_max_over_min": float(eig.max() / eig.min()),
    }  # fmt: skip


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.index is None:
        raise SystemExit("the index folder is required")
    corpus = TextLikeCorpus.from_cache()
    with Index.open(args.index, mode="r") as index:
        cells = index.store.cells.cells
        if cells is None:
            raise SystemExit(f"{args.index}: no fitted token cells")
        x = np.concatenate(corpus.documents(0, args.docs)).astype(np.float32)
        residuals = x - cells.fine[cells.assign(x)]
    return {"machine": machine(), "index": str(args.index), "documents": args.docs,
            **shape(residuals)}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    return "\n".join([
        f"{describe(result['machine'])}; residuals of the text-like corpus's first "
        f"{result['documents']:,} documents from the index's cells.",
        "",
        "| tokens | rows of zeros | kurtosis (Gaussian: 3) | principal-axes coding gain dB "
        "| largest / smallest variance |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {result['tokens']:,.0f} | {result['zero_rows']:,.0f} | {result['kurtosis']:.2f} | "
        f"{result['coding_gain_db']:.2f} | {result['eigen_max_over_min']:.1f} |",
    ])  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", type=Path, nargs="?")
    parser.add_argument("--docs", type=int, default=2000)


def main() -> None:
    bench_main(__doc__ or "", "residual_shape_1m.json", measure, markdown, add_arguments)


if __name__ == "__main__":
    main()
