"""Write tests/data/index-v9: an exact-store index of format version 9, whose token cells
are not fitted yet and were asked for with a count (the cells section ``{"count": 1024}``,
store option ``token_cells=1024``), for tests/test_formats.py.

Run from the repository root: ``python tests/data/make_index_v9.py``. 120 planted
documents (fewer tokens than a fit needs), a small FDE, residual2 tokens (stored against
the centre until the cells are fitted); rerun only to replace the fixture on purpose.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from muvera import FDEConfig, Index
from muvera.synthetic import planted_corpus

OUT = Path(__file__).parent / "index-v9"


def main() -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    docs, queries, _ = planted_corpus(120, 6, 8, doc_tokens=(5, 12), seed=23)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    np.savez(OUT / "queries.npz", *queries)
    path = OUT / "exact-cell-count"
    config = FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2)
    with Index.create(
        path, config, "exact", token_dtype="residual2", store_options={"token_cells": 1024},
        metadata={"made_by": commit},
    ) as index:  # fmt: skip
        index.add([f"d{i}" for i in range(120)], docs)
        result = index.search(queries, k=5, candidates=20)
        expected = {
            "exact-cell-count": {
                "len": len(index),
                "ids": result.ids.tolist(),
                "scores": result.scores.tolist(),
                "cells": index.manifest["tokens"]["cells"],
            }
        }
    (path / ".lock").unlink(missing_ok=True)
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
