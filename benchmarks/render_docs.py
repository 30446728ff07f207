"""Regenerate the benchmark tables in docs/ from benchmarks/results/*.json.

A generated block in a docs page sits between two markers::

    <!-- generated: bench_fde.py fde_encode.json -->
    ... whatever ``python benchmarks/bench_fde.py --markdown benchmarks/results/fde_encode.json``
    prints ...
    <!-- end generated -->

An optional ``blocks=2`` (or ``blocks=1,3``) after the JSON name keeps only those
paragraphs of the output (paragraphs are separated by blank lines). The benchmark scripts
call :func:`refresh` after writing their results, so a rerun updates the pages; run this
script to regenerate everything, or with ``--check`` to fail (exit 1, naming the blocks)
when a page differs from what its results file gives (a test runs that).

Usage: ``python benchmarks/render_docs.py [--check]``
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(
    r"(?P<begin><!-- generated: (?P<script>[\w.]+\.py) (?P<json>[\w.-]+\.json)"
    r"(?: blocks=(?P<blocks>[\d,]+))? -->\n)"
    r"(?P<body>.*?)"
    r"(?P<end><!-- end generated -->)",
    re.S,
)


def render(script: str, json_name: str, blocks: str | None) -> str:
    """What ``script --markdown RESULTS/json_name`` prints (the chosen paragraphs)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--markdown", str(RESULTS / json_name)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout.strip()  # fmt: skip
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", out) if p.strip()]
    if blocks:
        paragraphs = [paragraphs[int(i) - 1] for i in blocks.split(",")]
    return "\n\n".join(paragraphs) + "\n"


def update(page: Path, only: str | None = None) -> list[str]:
    """Re-render the blocks of ``page`` (those of results file ``only`` when given); returns
    the names of the blocks whose text changed. The page is rewritten only if one did."""
    text = page.read_text()
    changed: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if only is not None and match["json"] != only:
            return match.group(0)
        body = render(match["script"], match["json"], match["blocks"])
        if body != match["body"]:
            changed.append(f"{page.name}: {match['script']} {match['json']}")
        return match["begin"] + body + match["end"]

    new = BLOCK.sub(replace, text)
    if new != text:
        page.write_text(new)
    return changed


def refresh(results_file: Path) -> None:
    """Called by a benchmark after writing ``results_file``: re-render the docs blocks built
    from it (a results file written elsewhere, e.g. ``--out /tmp/x.json``, changes nothing)."""
    results_file = Path(results_file).resolve()
    if results_file.parent != RESULTS.resolve():
        return
    for page in sorted(DOCS.glob("*.md")):
        for name in update(page, only=results_file.name):
            print(f"updated {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on drift")
    args = parser.parse_args(argv)
    stale: list[str] = []
    for page in sorted(DOCS.glob("*.md")):
        if args.check:
            original = page.read_text()
            stale += update(page)
            page.write_text(original)
        else:
            for name in update(page):
                print(f"updated {name}")
    if stale:
        print("out of date with benchmarks/results:\n  " + "\n  ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
