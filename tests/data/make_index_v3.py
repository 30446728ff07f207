"""Write tests/data/index-v3: calibrated indexes (format version 3) for tests/test_formats.py.

Run from the repository root: ``python tests/data/make_index_v3.py``. It records the commit
it ran at in each index's metadata; rerun only to replace the fixture on purpose (the test
exists to catch changes of what an index of this version returns). ``write`` is shared by
the scripts of later versions.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from muvera import FDEConfig, Index
from muvera.synthetic import planted_corpus

OUT = Path(__file__).parent / "index-v3"


def write(
    out: Path,
    corpus: dict[str, Any],
    variants: dict[str, dict[str, Any]],
    extra: Callable[[Index], dict[str, Any]],
) -> None:
    """Index the planted corpus (40 documents, d3 deleted) once per variant (folder name ->
    ``Index.create`` keywords) into ``out``, with the queries and what each index returns
    (search, FDE-only search, and ``extra(index)``) in ``expected.json``."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    docs, queries, _ = planted_corpus(40, 4, 8, doc_tokens=(25, 35), **corpus)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    np.savez(out / "queries.npz", *queries)
    expected = {}
    for name, options in variants.items():
        path = out / name
        config = FDEConfig(dimension=8, num_repetitions=4, num_simhash_projections=3)
        with Index.create(path, config, metadata={"made_by": commit}, **options) as index:
            index.add([f"d{i}" for i in range(40)], docs, [{"n": i} for i in range(40)])
            index.delete(["d3"])
            result = index.search(queries, k=5, candidates=20)
            fde = index.search(queries, k=5, rerank=False)
            expected[name] = {
                "len": len(index),
                "ids": result.ids.tolist(),
                "scores": result.scores.tolist(),
                "fde_ids": fde.ids.tolist(),
                "fde_scores": fde.scores.tolist(),
                **extra(index),
            }
        (path / ".lock").unlink(missing_ok=True)
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    write(
        OUT,
        {"common": 3.0, "seed": 11},
        {"exact-float16": {"store": "exact"}, "hnswlib-float16": {"store": "hnswlib"}},
        lambda index: {"calibration": index.calibration},
    )


if __name__ == "__main__":
    main()
