"""Fuzzed index folders: every file of an index (each store) truncated, bit-flipped
and extended, and every manifest field replaced, must open and search correctly or raise
MuveraError: never another exception, never a crash (the work runs in a child process
whose exit status is checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from muvera import FDEConfig, Index

D = 8
WORKER = Path(__file__).with_name("fuzz_worker.py")
FIELD_VALUES = [None, -1, 0, 2**40, "x", "../x", [], {}, 1.5, True]


def _source(tmp_path: Path, store: str) -> Path:
    rng = np.random.default_rng(1)
    cells = store.endswith(("-cells", "-residual4", "-residual2", "-residual4lm"))
    low, high = (820, 900) if cells else (1, 9)  # cells: 32,768+ tokens
    lengths = rng.integers(low, high, 40)
    docs = [rng.standard_normal((int(n), D)).astype(np.float32) for n in lengths]
    path = tmp_path / "source"
    config = FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=2)
    options = {"path": str(tmp_path / "qdata")} if store == "qdrant" else None
    kind, _, codes = store.partition("-")  # "hnswlib-int4": quantized token codes
    segments = codes == "segments"  # a main graph and two graph segments
    if codes == "vectors":  # graph files with hnswlib's vectors (the layout before links)
        options = {"graph_vectors": True}
    codes = "" if codes in ("cells", "segments", "vectors") else codes
    with Index.create(
        path, config, store=kind, store_options=options, checksums=store == "exact",
        token_dtype=codes or "float16",
    ) as index:  # fmt: skip
        first = 2 if codes.startswith("residual") else 40  # residuals: rows of both kinds
        spans = [(0, 34), (34, 37), (37, 40)] if segments else [(0, first), (first, 40)]
        for start, stop in spans:
            index.add([f"d{i}" for i in range(start, stop)], docs[start:stop],
                      [{"i": i} for i in range(start, stop)])  # fmt: skip
        assert kind != "hnswlib" or index.store.segments == (2 if segments else 0)
        index.delete(["d3", "d4"])
    if store == "qdrant":
        from muvera.stores import qdrant

        qdrant._LOCAL_CLIENTS.pop(str(tmp_path / "qdata")).close()
    (path / ".lock").unlink()
    return path


def _fields(manifest: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in manifest.items():
        if isinstance(value, dict) and value:
            out += _fields(value, (*prefix, key))
        else:
            out.append((*prefix, key))
    return out


def _mutations(source: Path) -> list[dict]:
    mutations: list[dict] = []
    files = sorted(p.name for p in source.iterdir() if p.is_file())
    for seed, name in enumerate(files):
        for keep in (0.0, 0.5, 0.97):
            mutations.append({"kind": "truncate", "file": name, "keep": keep, "seed": seed})
        for count in (1, 8, 64):
            mutations.append({"kind": "flip", "file": name, "count": count, "seed": seed})
        mutations.append({"kind": "extend", "file": name, "count": 100, "seed": seed})
    manifest = json.loads((source / "manifest.json").read_text())
    for field in _fields(manifest):
        for value in FIELD_VALUES:
            mutations.append({"kind": "manifest", "field": list(field), "value": value})
    return mutations


@pytest.mark.parametrize(
    "store",
    [
        "exact",
        "hnswlib",
        "hnswlib-segments",
        "hnswlib-int4",
        "hnswlib-cells",
        "hnswlib-residual4",
        "hnswlib-residual2",
        "hnswlib-residual4lm",
        "hnswlib-vectors",
        "qdrant",
    ],
)
def test_fuzzed_folders_raise_muvera_error_or_work(tmp_path, store):
    pytest.importorskip("qdrant_client" if store == "qdrant" else "hnswlib")
    source = _source(tmp_path, store)
    mutations = _mutations(source)
    spec = tmp_path / "mutations.json"
    spec.write_text(json.dumps(mutations))
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, str(WORKER), str(source), str(work), str(spec)]
        + ([str(tmp_path / "qdata")] if store == "qdrant" else []),
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent)),
    )  # fmt: skip
    outcomes: dict[int, str] = {}
    started = None
    for line in done.stdout.splitlines():
        if line.startswith("BEGIN "):
            started = int(line.split()[1])
        elif line.startswith("END "):
            _, i, outcome = line.split(" ", 2)
            outcomes[int(i)] = outcome
    if done.returncode != 0:
        crashed = mutations[started] if started is not None else None
        pytest.fail(f"the child died ({done.returncode}) on {crashed}:\n{done.stderr[-2000:]}")
    assert len(outcomes) == len(mutations)
    bad = {i: o for i, o in outcomes.items() if o not in ("ok", "MuveraError")}
    assert not bad, [(mutations[i], o) for i, o in list(bad.items())[:40]]
    assert sum(o == "MuveraError" for o in outcomes.values()) > len(mutations) // 3
    assert sum(o == "ok" for o in outcomes.values()) >= 20  # not everything refused
