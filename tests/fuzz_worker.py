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
from muvera.stores import local

SCAN_TOKENS = local.SCAN_TOKENS


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


def exercise(folder: Path, queries: list[np.ndarray], options: dict | None) -> None:
    with Index.open(folder, mode="r", store_options=options) as index:
        try:  # a damaged file is reported; any other exception is a bug
            index.verify()
        except MuveraError as exc:
            if "records no checksums" in str(exc) and "checksums" in index.manifest:
                raise RuntimeError("checksums recorded but not found") from None
        index.search(queries, k=5, candidates=20)
        local.SCAN_TOKENS = 0  # searched as a large index too: cell postings and probe
        try:
            index.search(queries, k=5, candidates=20)
        finally:
            local.SCAN_TOKENS = SCAN_TOKENS
        index.search(queries, k=5, rerank=False)
        index.search_exact(queries, k=5)
        for doc_id in index.ids[:5]:
            index.tokens(doc_id)
    with Index.open(folder, store_options=options) as index:  # a writer too
        index.add(["fuzz-new"], [queries[0]])
        index.search(queries, k=3)


def main() -> None:
    source, work = Path(sys.argv[1]), Path(sys.argv[2])
    mutations = json.loads(Path(sys.argv[3]).read_text())
    qdrant_data = Path(sys.argv[4]) if len(sys.argv) > 4 else None  # a qdrant index's storage
    rng = np.random.default_rng(0)
    queries = [rng.standard_normal((4, 8)).astype(np.float32) for _ in range(2)]
    for i, mutation in enumerate(mutations):
        print(f"BEGIN {i}", flush=True)
        folder = work / f"m{i}"
        shutil.copytree(source, folder)
        options = None
        if qdrant_data is not None:  # each mutation gets its own copy of the Qdrant storage
            options = {"path": str(work / f"q{i}")}
            shutil.copytree(qdrant_data, options["path"])
        try:
            mutate(folder, mutation)
            exercise(folder, queries, options)
            outcome = "ok"
        except MuveraError:
            outcome = "MuveraError"
        except Exception as exc:
            outcome = f"{type(exc).__name__}:{exc}".replace("\n", " ")[:300]
        shutil.rmtree(folder, ignore_errors=True)
        if options is not None:
            from muvera.stores import qdrant

            for client in qdrant._LOCAL_CLIENTS.values():
                client.close()
            qdrant._LOCAL_CLIENTS.clear()
            shutil.rmtree(options["path"], ignore_errors=True)
        print(f"END {i} {outcome}", flush=True)


if __name__ == "__main__":
    main()
