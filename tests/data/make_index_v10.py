"""Write tests/data/index-v10: an index with residual4lm tokens (format version 10:
residual4's nibbles decoding to Lloyd-Max levels) for tests/test_formats.py.

Run from the repository root: ``python tests/data/make_index_v10.py``. 600 planted
documents of 50-70 tokens added in two batches (the first too small to fit the cells, so
its rows keep the centre; the second fits them and is stored as residuals), a small FDE,
the exact store; rerun only to replace the fixture on purpose.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from muvera import FDEConfig, Index
from muvera.synthetic import planted_corpus

OUT = Path(__file__).parent / "index-v10"


def main() -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    docs, queries, _ = planted_corpus(600, 6, 8, doc_tokens=(50, 70), seed=17)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    np.savez(OUT / "queries.npz", *queries)
    path = OUT / "exact-residual4lm"
    config = FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2)
    with Index.create(
        path, config, "exact", token_dtype="residual4lm", metadata={"made_by": commit}
    ) as index:
        index.add([f"d{i}" for i in range(100)], docs[:100])
        index.add([f"d{i}" for i in range(100, 600)], docs[100:])
        index.delete(["d3"])
        result = index.search(queries, k=5, candidates=20)
        expected = {
            "exact-residual4lm": {
                "len": len(index),
                "ids": result.ids.tolist(),
                "scores": result.scores.tolist(),
                "cells": index.manifest["tokens"]["cells"],
                "residual_from": index.manifest["tokens"]["residual_from"],
            }
        }
    (path / ".lock").unlink(missing_ok=True)
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
