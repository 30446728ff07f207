"""Run by test_fuzz.py in a child process (a crash there cannot take pytest down): applies
each mutation to a copy of an index folder, then opens, searches and reads it. Prints
``BEGIN i`` before mutation ``i`` and ``END i <outcome>`` after it, outcome being ``ok``,
``MuveraError`` or the name of any other exception."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from muvera import Index, MuveraError


def mutate(folder: Path, mutation: dict) -> None:
    kind = mutation["kind"]
    if kind == "manifest":
        manifest = json.loads((folder / "manifest.json").read_text())
        node = manifest
        *parents, last = mutation["field"]
        for key in parents:
            node = node[key]
        node[last] = mutation["value"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return
    path = folder / mutation["file"]
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(mutation["seed"])
    if kind == "truncate":
        data = data[: int(len(data) * mutation["keep"])]
    elif kind == "flip":
        for pos in rng.integers(0, max(len(data), 1), mutation["count"]).tolist():
            if data:
                data[pos] ^= 1 << int(rng.integers(0, 8))
    elif kind == "extend":
        data += rng.integers(0, 256, mutation["count"], dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def exercise(folder: Path, queries: list[np.ndarray]) -> None:
    with Index.open(folder, mode="r") as index:
        index.search(queries, k=5, candidates=20)
        index.search(queries, k=5, rerank=False)
        index.search_exact(queries, k=5)
        for doc_id in index.ids[:5]:
            index.tokens(doc_id)
    with Index.open(folder) as index:  # a writer too
        index.add(["fuzz-new"], [queries[0]])
        index.search(queries, k=3)


def main() -> None:
    source, work = Path(sys.argv[1]), Path(sys.argv[2])
    mutations = json.loads(Path(sys.argv[3]).read_text())
    rng = np.random.default_rng(0)
    queries = [rng.standard_normal((4, 8)).astype(np.float32) for _ in range(2)]
    for i, mutation in enumerate(mutations):
        print(f"BEGIN {i}", flush=True)
        folder = work / f"m{i}"
        shutil.copytree(source, folder)
        try:
            mutate(folder, mutation)
            exercise(folder, queries)
            outcome = "ok"
        except MuveraError:
            outcome = "MuveraError"
        except Exception as exc:
            outcome = f"{type(exc).__name__}:{exc}".replace("\n", " ")[:300]
        shutil.rmtree(folder, ignore_errors=True)
        print(f"END {i} {outcome}", flush=True)


if __name__ == "__main__":
    main()
