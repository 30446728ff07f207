"""What optional checksums cost: commits and opens of a SciFact index with and without them.

Builds the default index (hnswlib, float16 tokens) over the cached SciFact token vectors of
``../shared/models/minilm-colbert-128`` twice, in commits of ``--batch`` documents, once
with ``checksums=True``; times the whole build of each (alternating the order between
rounds, best of ``--rounds``), then ``Index.open(mode="r")`` against
``Index.open(mode="r", verify=True)`` (which reads every byte of the folder back).
Prints a table and writes ``benchmarks/results/checksums.json``.

Usage: ``python benchmarks/bench_checksums.py [--batch 500] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from encode_beir import SHARED, load_cached, split_tokens  # noqa: E402
from machine import describe, machine  # noqa: E402
from runner import bench_main  # noqa: E402

from muvera import FDEConfig, Index, __version__  # noqa: E402


def build(path: Path, docs: list, batch: int, checksums: bool) -> float:
    t0 = time.perf_counter()
    with Index.create(path, FDEConfig(dimension=128), checksums=checksums) as index:
        for start in range(0, len(docs), batch):
            part = docs[start : start + batch]
            index.add(list(range(start, start + len(part))), part)
    return time.perf_counter() - t0


def measure(batch: int, rounds: int) -> dict[str, Any]:
    cached = load_cached(SHARED / "data" / "scifact", SHARED / "models" / "minilm-colbert-128")
    docs = split_tokens(cached["doc_tokens"], cached["doc_lengths"])
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for checksums in (False, True) if r % 2 == 0 else (True, False):
                path = Path(tmp) / f"ix-{checksums}"
                shutil.rmtree(path, ignore_errors=True)
                key = f"build_s_checksums_{checksums}".lower()
                best[key] = min(best.get(key, 1e9), build(path, docs, batch, checksums))
        path = Path(tmp) / "ix-True"
        folder_bytes = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
        for _ in range(rounds):
            for verify in (False, True):
                t0 = time.perf_counter()
                Index.open(path, mode="r", verify=verify).close()
                key = f"open_s_verify_{verify}".lower()
                best[key] = min(best.get(key, 1e9), time.perf_counter() - t0)
    verify_s = best["open_s_verify_true"] - best["open_s_verify_false"]
    return {
        "muvera_version": __version__,
        "machine": machine(),
        "documents": len(docs),
        "commits": -(-len(docs) // batch),
        "folder_bytes": folder_bytes,
        **best,
        "build_overhead": best["build_s_checksums_true"] / best["build_s_checksums_false"] - 1,
        "verify_gb_per_s": folder_bytes / 1e9 / max(verify_s, 1e-9),
    }


def markdown(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"{describe(r['machine'])}; SciFact, {r['documents']:,} documents in "
            f"{r['commits']} commits, default index ({r['folder_bytes'] / 2**20:,.0f} MiB):",
            "",
            "| | without checksums | with checksums |",
            "| --- | ---: | ---: |",
            f"| build (all commits) s | {r['build_s_checksums_false']:.1f} | "
            f"{r['build_s_checksums_true']:.1f} ({100 * r['build_overhead']:+.1f}%) |",
            f"| open s | {r['open_s_verify_false']:.3f} | "
            f"{r['open_s_verify_true']:.3f} with `verify=True` "
            f"({r['verify_gb_per_s']:.1f} GB/s verified) |",
        ]
    )


def main() -> None:
    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--batch", type=int, default=500)
        parser.add_argument("--rounds", type=int, default=2)

    bench_main(
        __doc__,
        "checksums.json",
        lambda args: measure(args.batch, args.rounds),
        markdown,
        arguments,
    )


if __name__ == "__main__":
    main()
