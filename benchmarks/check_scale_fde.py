"""Brute-force FDE search on bench_scale.py's synthetic corpus: where is the planted document?

Separates FDE quality from HNSW recall for the scale run: encodes 10k and 30k of its
documents with the default FDE (and with filling), ranks every document by FDE inner
product for 100 queries, and prints how often the planted document is in the FDE top
1/10/100/500/1000, next to exact MaxSim's top-1 for 20 queries. Needs ~8 GB of RAM at 30k.

Usage: ``python benchmarks/check_scale_fde.py [--steps 10000,30000]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import DIM, Corpus

from muvera import FDEConfig, FDEEncoder, maxsim

CUTS = (1, 10, 100, 500, 1000)


def planted_ranks(config: FDEConfig, docs: list, queries: list, targets: np.ndarray) -> np.ndarray:
    encoder = FDEEncoder(config)
    scores = encoder.encode_queries(queries) @ encoder.encode_documents(docs).T
    target_scores = scores[np.arange(len(targets)), targets]
    return (scores > target_scores[:, None]).sum(axis=1)  # documents strictly ahead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="10000,30000")
    args = parser.parse_args()
    corpus = Corpus()
    for n in [int(s) for s in args.steps.split(",")]:
        t0 = time.perf_counter()
        docs = [corpus.documents(i, i + 1)[0].astype(np.float32) for i in range(n)]
        queries, targets = corpus.queries(n, 100)
        exact_first = np.mean(maxsim(queries[:20], docs).argmax(axis=1) == targets[:20])
        for name, config in (
            ("default FDE", FDEConfig(dimension=DIM)),
            ("with filling", FDEConfig(dimension=DIM, fill_empty_partitions=True)),
        ):
            ranks = planted_ranks(config, docs, queries, targets)
            cells = ", ".join(f"top-{c} {np.mean(ranks < c):.0%}" for c in CUTS)
            print(f"{n:,} documents, {name}: planted document in the brute-force FDE {cells}")
        print(
            f"{n:,} documents: exact MaxSim puts it first for {exact_first:.0%} of 20 queries "
            f"({time.perf_counter() - t0:.0f} s)"
        )


if __name__ == "__main__":
    main()
