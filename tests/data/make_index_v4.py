"""Write tests/data/index-v4: indexes with quantized token codes (format version 4) for
tests/test_formats.py.

Run from the repository root: ``python tests/data/make_index_v4.py``. It records the commit
it ran at in each index's metadata; rerun only to replace the fixture on purpose (the test
exists to catch changes of what an index of this version returns).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from muvera import FDEConfig, Index
from muvera.synthetic import planted_corpus

OUT = Path(__file__).parent / "index-v4"


def main() -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    docs, queries, _ = planted_corpus(40, 4, 8, doc_tokens=(25, 35), seed=12)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    np.savez(OUT / "queries.npz", *queries)
    expected = {}
    for store, codes in (("exact", "int8"), ("hnswlib", "int4")):
        path = OUT / f"{store}-{codes}"
        config = FDEConfig(dimension=8, num_repetitions=4, num_simhash_projections=3)
        with Index.create(
            path, config, store=store, token_dtype=codes, metadata={"made_by": commit}
        ) as index:
            index.add([f"d{i}" for i in range(40)], docs, [{"n": i} for i in range(40)])
            index.delete(["d3"])
            result = index.search(queries, k=5, candidates=20)
            fde = index.search(queries, k=5, rerank=False)
            expected[path.name] = {
                "len": len(index),
                "tokens_d5": index.get(["d5"])[0].tokens.tolist(),
                "ids": result.ids.tolist(),
                "scores": result.scores.tolist(),
                "fde_ids": fde.ids.tolist(),
                "fde_scores": fde.scores.tolist(),
            }
        (path / ".lock").unlink(missing_ok=True)
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
