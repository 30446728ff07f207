"""Where the two-stage search loses the exact top-10 on the text-like corpus: brute-force
FDE candidates (no graph) re-ranked by exact MaxSim, against the hnswlib index's results
(``bench_scale_text.py``). For N documents of ``scale_corpus.py`` and its query sample,
prints the share of the exact MaxSim top-10 found by FDE top-C + exact re-rank for several
C, per FDE setting: the FDE's own ceiling at each candidate count.

Usage: ``python benchmarks/check_scale_text_fde.py [--documents 100000]
[--settings 20,40:4096] [--candidates 200,400,800]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scale_text import ground_truth  # noqa: E402
from scale_corpus import TextLikeCorpus  # noqa: E402

from muvera import FDEConfig, FDEEncoder  # noqa: E402
from muvera.scoring import maxsim_pairs  # noqa: E402

BLOCK = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--settings", default="20,40:4096", help="R or R:final_dims, comma-separated"
    )
    parser.add_argument("--candidates", default="200,400,800")
    args = parser.parse_args()
    corpus = TextLikeCorpus.from_cache()
    queries = corpus.queries(args.queries)
    truth = ground_truth(corpus, args.documents, queries)
    counts = [int(c) for c in args.candidates.split(",")]
    q_all = np.concatenate(queries)
    q_off = np.concatenate([[0], np.cumsum([len(q) for q in queries])]).astype(np.int64)
    for setting in args.settings.split(","):
        reps, _, final = setting.partition(":")
        config = FDEConfig(dimension=corpus.dimension, num_repetitions=int(reps),
                           final_projection_dimension=int(final) if final else None)  # fmt: skip
        encoder = FDEEncoder(config)
        q_fde = encoder.encode_queries(queries)
        width = max(counts)
        best = np.full((len(queries), width), -np.inf, np.float32)
        best_ids = np.full((len(queries), width), -1, np.int64)
        for start in range(0, args.documents, BLOCK):
            docs = corpus.documents(start, min(args.documents, start + BLOCK))
            scores = q_fde @ encoder.encode_documents([d.astype(np.float32) for d in docs]).T
            ids = np.broadcast_to(np.arange(start, start + len(docs)), scores.shape)
            all_s, all_i = np.concatenate([best, scores], 1), np.concatenate([best_ids, ids], 1)
            top = np.argpartition(-all_s, width - 1, axis=1)[:, :width]
            best, best_ids = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
        order = np.argsort(-best, axis=1, kind="stable")
        best_ids = np.take_along_axis(best_ids, order, 1)
        # exact MaxSim of the widest candidate list, regenerated document by document
        cand = np.unique(best_ids)
        tokens = {int(j): corpus.documents(int(j), int(j) + 1)[0] for j in cand}
        rows = np.concatenate([tokens[int(j)] for j in cand])
        lens = np.array([len(tokens[int(j)]) for j in cand], np.int64)
        offs = np.cumsum(lens) - lens
        where = {int(j): i for i, j in enumerate(cand)}
        idx = np.vectorize(where.get)(best_ids)
        pq = np.repeat(np.arange(len(queries)), width)
        exact = maxsim_pairs(rows, offs[idx.ravel()], lens[idx.ravel()], pq, q_all, q_off)
        exact = exact.reshape(len(queries), width)
        line = [
            f"R={reps}" + (f"->{final}" if final else "") + f" ({encoder.output_dimension} dims)"
        ]
        for c in counts:
            top10 = np.take_along_axis(
                best_ids[:, :c], np.argsort(-exact[:, :c], axis=1)[:, :10], 1
            )
            found = np.mean(
                [
                    len(set(a) & set(b)) / 10
                    for a, b in zip(top10.tolist(), truth.tolist(), strict=True)
                ]
            )
            line.append(f"top-{c}: {found:.3f}")
        print(f"{args.documents:,} documents, " + ", ".join(line), flush=True)


if __name__ == "__main__":
    main()
