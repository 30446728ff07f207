"""Write tests/data/index-v8: an hnswlib index of format version 8, whose graph files hold
no vectors (links files, muvera/stores/hnsw_links.py, links-file version 1, beside their
``hnsw-<gen>.codes`` files) for tests/test_formats.py.

Run from the repository root: ``python tests/data/make_index_v8.py``. 230 planted
documents: 200 in the main graph, then two commits of 15 (two segments), one delete, a
small FDE, float16 tokens, no token cells; rerun only to replace the fixture on purpose.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from muvera import FDEConfig, Index
from muvera.synthetic import planted_corpus

OUT = Path(__file__).parent / "index-v8"


def main() -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    docs, queries, _ = planted_corpus(230, 6, 8, doc_tokens=(5, 12), seed=19)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    np.savez(OUT / "queries.npz", *queries)
    path = OUT / "hnswlib-links"
    config = FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2)
    with Index.create(
        path, config, "hnswlib", store_options={"token_cells": False},
        metadata={"made_by": commit},
    ) as index:  # fmt: skip
        index.add([f"d{i}" for i in range(200)], docs[:200])
        for start in (200, 215):
            index.add([f"d{i}" for i in range(start, start + 15)], docs[start : start + 15])
        index.delete(["d210"])
        result = index.search(queries, k=5, candidates=20)
        fde_only = index.search(queries, k=5, rerank=False)
        expected = {
            "hnswlib-links": {
                "len": len(index),
                "ids": result.ids.tolist(),
                "scores": result.scores.tolist(),
                "fde_ids": fde_only.ids.tolist(),
                "entry": index.manifest["store"]["entry"],
            }
        }
    (path / ".lock").unlink(missing_ok=True)
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
