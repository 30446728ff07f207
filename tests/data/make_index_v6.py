"""Write tests/data/index-v6: an index with residual4 tokens (format version 6) for
tests/test_formats.py.

Run from the repository root: ``python tests/data/make_index_v6.py``. 600 planted
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

OUT = Path(__file__).parent / "index-v6"


def write(out: Path, token_dtype: str, seed: int) -> None:
    """The fixture folder ``out`` (replaced): ``exact-<token_dtype>``, its queries and
    what it returned (also make_index_v10.py's, with residual4lm tokens)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    docs, queries, _ = planted_corpus(600, 6, 8, doc_tokens=(50, 70), seed=seed)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    np.savez(out / "queries.npz", *queries)
    name = f"exact-{token_dtype}"
    path = out / name
    config = FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2)
    with Index.create(
        path, config, "exact", token_dtype=token_dtype, metadata={"made_by": commit}
    ) as index:
        index.add([f"d{i}" for i in range(100)], docs[:100])
        index.add([f"d{i}" for i in range(100, 600)], docs[100:])
        index.delete(["d3"])
        result = index.search(queries, k=5, candidates=20)
        expected = {
            name: {
                "len": len(index),
                "ids": result.ids.tolist(),
                "scores": result.scores.tolist(),
                "cells": index.manifest["tokens"]["cells"],
                "residual_from": index.manifest["tokens"]["residual_from"],
            }
        }
    (path / ".lock").unlink(missing_ok=True)
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    write(OUT, "residual4", seed=13)
