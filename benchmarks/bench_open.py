"""What a reader pays to open an hnswlib index: with its persisted FDE codes mapped, and
quantizing every row of the graph file at open (what readers did before the codes were
persisted, and still do for an index without them).

On an existing index (``--index``; it is modified: when it has no codes yet, one document
is added and deleted, so that a commit writes them). Each measurement runs in a fresh
process: seconds to open, RSS after opening, seconds of the first search (which builds the
token cells' postings when the index is large) and peak RSS. The two ways alternate
``--rounds`` times; the "quantize" rounds hide the manifest's codes section and restore it.

Usage: ``python benchmarks/bench_open.py --index DIR [--rounds 3] [--out results.json]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, machine, memory  # noqa: E402

from muvera import Index  # noqa: E402


def open_once(path: Path) -> dict[str, Any]:
    """In this (fresh) process: open read-only, search once."""
    t0 = time.perf_counter()
    index = Index.open(path, mode="r")
    opened = time.perf_counter() - t0
    rss_open = memory("VmRSS")
    rng = np.random.default_rng(0)
    query = rng.standard_normal((32, index.token_dimension)).astype(np.float32)
    t0 = time.perf_counter()
    index.search([query], k=10)
    return {
        "open_s": opened, "rss_open": rss_open, "first_search_s": time.perf_counter() - t0,
        "rss_peak": memory("VmHWM"), "codes": index.store.code_rows > 0,
    }  # fmt: skip


def measure(path: Path, rounds: int) -> dict[str, Any]:
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if "codes" not in (manifest["store"].get("entry") or {}):
        with Index.open(path) as index:  # one commit writes every row's codes
            tokens = index.tokens(index.ids[0])
            extra = "bench-open" if index.records.id_type == "str" else 10**12
            index.add([extra], [tokens])
            index.delete([extra])
        manifest = json.loads(manifest_path.read_text())
    original = manifest_path.read_text()
    hidden = json.loads(original)
    del hidden["store"]["entry"]["codes"]
    rows: dict[str, list[dict[str, Any]]] = {"mapped": [], "quantize": []}
    try:
        for _ in range(rounds):
            for way in rows:
                manifest_path.write_text(original if way == "mapped" else json.dumps(hidden))
                done = subprocess.run(
                    [sys.executable, __file__, "--child", str(path)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                rows[way].append(json.loads(done.stdout))
    finally:
        manifest_path.write_text(original)
    return {"machine": machine(), "index": str(path), "rows": rows,
            "documents": len(Index.open(path, mode="r")),
            "fde_dimension": manifest["fde_dimension"]}  # fmt: skip


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(open_once(Path(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = measure(args.index, args.rounds)
    gib = 2**30
    print(
        f"{describe(result['machine'])}; {result['documents']:,} documents, "
        f"{result['fde_dimension']:,}-dim FDEs; medians of {args.rounds} fresh processes"
    )
    print("| reader | open s | RSS after open GiB | first search s | peak RSS GiB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for way, runs in result["rows"].items():
        med = {k: float(np.median([r[k] for r in runs])) for k in runs[0] if k != "codes"}
        result[f"{way}_median"] = med
        print(f"| {way} | {med['open_s']:.2f} | {med['rss_open'] / gib:.2f} | "
              f"{med['first_search_s']:.2f} | {med['rss_peak'] / gib:.2f} |")  # fmt: skip
    ratio = result["quantize_median"]["open_s"] / result["mapped_median"]["open_s"]
    print(f"open: quantizing takes {ratio:.1f}x the time of mapping the codes")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
