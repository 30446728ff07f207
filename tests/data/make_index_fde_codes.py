"""Write tests/data/index-fde-codes: an hnswlib index with persisted FDE codes (format
version 1: older readers ignore them) for tests/test_formats.py.

Run from the repository root: ``python tests/data/make_index_fde_codes.py``. 300 planted
documents of 5-9 tokens (too few for token cells), a small FDE, the hnswlib store with its
int8 walk, float16 tokens; rerun only to replace the fixture on purpose.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from muvera import FDEConfig, Index
from muvera.synthetic import planted_corpus

OUT = Path(__file__).parent / "index-fde-codes"


def main() -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    docs, queries, _ = planted_corpus(300, 6, 8, doc_tokens=(5, 9), seed=17)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    np.savez(OUT / "queries.npz", *queries)
    path = OUT / "hnswlib-codes"
    config = FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2)
    with Index.create(path, config, "hnswlib", metadata={"made_by": commit}) as index:
        index.add([f"d{i}" for i in range(200)], docs[:200])
        index.add([f"d{i}" for i in range(200, 300)], docs[200:])
        index.delete(["d3"])
        result = index.search(queries, k=5, candidates=20)
        expected = {
            "hnswlib-codes": {
                "len": len(index),
                "ids": result.ids.tolist(),
                "scores": result.scores.tolist(),
                "codes": index.manifest["store"]["entry"]["codes"],
            }
        }
    (path / ".lock").unlink(missing_ok=True)
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
