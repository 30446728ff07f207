"""A/B: this checkout against an earlier commit, measured alternately in one run.

Exports ``--base`` (default: the commit before the restructure, 1d005a2) with ``git
archive``, compiles its kernels with its own build hook, then alternates the two trees
round by round (the order flips each round) on the same tasks (``ab_worker.py``): FDE
encoding rates at the default config, and two-stage search on SciFact (an hnswlib index
built by each tree from the token cache of ``encode_beir.py``; p50/p95 per query, nDCG@10,
share of the exact top-10). Reports each tree's best round and the ratios. Writes
``benchmarks/results/ab_<base>.json``.

Usage: ``python benchmarks/ab_commits.py [--base COMMIT] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "benchmarks" / "ab_worker.py"


def export(commit: str, where: Path) -> Path:
    """The tree of ``commit`` in ``where`` with its compiled kernels."""
    where.mkdir(parents=True, exist_ok=True)
    archive = where / "tree.tar"
    subprocess.run(["git", "archive", "-o", str(archive), commit], cwd=ROOT, check=True)
    tree = where / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    spec = importlib.util.spec_from_file_location("base_hatch_build", tree / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    if (tree / "muvera" / "native" / "variants.py").is_file():  # per-variant layout
        for variant in hook.wanted_variants(tree):
            name = hook.load_variants(tree).library_filename(variant)
            error = hook.compile_kernel(tree, tree / "muvera" / "native" / name, variant)
            if error:
                raise SystemExit(error)
    else:  # one library next to muvera/_native.py
        name = hook._library_filename(tree)
        error = hook.compile_kernel(tree, tree / "muvera" / name)
        if error:
            raise SystemExit(error)
    return tree


def work(tree: Path, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, str(WORKER), *args], env=env, capture_output=True, text=True,
        cwd=tree.parent,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{tree}: ab_worker.py {' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="1d005a2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or ROOT / "benchmarks" / "results" / f"ab_{args.base}.json"
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True,
        text=True,
    ).stdout.strip()  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="muvera-ab-") as tmp:
        trees = {args.base: export(args.base, Path(tmp) / "base"), "HEAD": ROOT}
        indexes = {}
        for name, tree in trees.items():
            indexes[name] = Path(tmp) / f"index-{name}"
            print(f"building the SciFact index with {name} ...", flush=True)
            work(tree, "build", "--index", str(indexes[name]))
        rounds: dict[str, list[dict]] = {name: [] for name in trees}
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for name in order:
                fde = work(trees[name], "fde")
                found = work(trees[name], "search", "--index", str(indexes[name]))
                rounds[name].append({**fde, **found})
                print(
                    f"round {r + 1} {name}: {fde['docs_per_s']:,.0f} docs/s, "
                    f"{fde['queries_per_s']:,.0f} queries/s, search p50 "
                    f"{found['p50_ms']:.2f} ms, nDCG@10 {found['ndcg10']:.4f}",
                    flush=True,
                )
        shutil.rmtree(Path(tmp) / "base", ignore_errors=True)
    best = {
        name: {
            "docs_per_s": max(x["docs_per_s"] for x in rs),
            "queries_per_s": max(x["queries_per_s"] for x in rs),
            "p50_ms": min(x["p50_ms"] for x in rs),
            "p95_ms": min(x["p95_ms"] for x in rs),
            "ndcg10": rs[0]["ndcg10"],
            "exact_top10_found": rs[0]["exact_top10_found"],
            "machine": rs[0]["machine"],
        }
        for name, rs in rounds.items()
    }
    b, h = best[args.base], best["HEAD"]
    print(f"\nCPU: {h['machine']['cpu']} ({' '.join(h['machine']['flags'])})")
    print(f"kernels: {args.base}: {b['machine']['kernel_variant']}; "
          f"HEAD ({head}): {h['machine']['kernel_variant']}\n")  # fmt: skip
    print(markdown({"base": args.base, "head": head, "best": best}))
    out.write_text(json.dumps({"base": args.base, "head": head, "best": best,
                               "rounds": rounds}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {out}")


def markdown(result: dict) -> str:
    base, head = result["base"], result["head"]
    b, h = result["best"][base], result["best"]["HEAD"]
    rows = [
        ("FDE documents/s (default config)", "docs_per_s", "{:,.0f}", True),
        ("FDE queries/s", "queries_per_s", "{:,.0f}", True),
        ("two-stage search p50 ms (SciFact, hnswlib, 100 candidates)", "p50_ms", "{:.2f}", False),
        ("two-stage search p95 ms", "p95_ms", "{:.2f}", False),
        ("nDCG@10", "ndcg10", "{:.4f}", True),
        ("exact top-10 found", "exact_top10_found", "{:.3f}", True),
    ]
    lines = [f"| measure (best of rounds) | {base} | {head} | {head} / {base} |",
             "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for label, key, fmt, _ in rows:
        ratio = h[key] / b[key] if b[key] else float("nan")
        lines.append(f"| {label} | {fmt.format(b[key])} | {fmt.format(h[key])} | {ratio:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--markdown":
        print(markdown(json.loads(Path(sys.argv[2]).read_text())))
    else:
        main()
