"""docs/: the benchmark tables are what benchmarks/render_docs.py renders from
benchmarks/results/*.json, and every link between the pages resolves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_benchmark_tables_match_their_results_files():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "render_docs.py"), "--check"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert sum(p.read_text().count("<!-- generated:") for p in PAGES) >= 5


def test_render_docs_replaces_a_stale_block(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import render_docs
    finally:
        sys.path.pop(0)
    page = tmp_path / "page.md"
    page.write_text(
        "intro\n<!-- generated: bench_scale.py scale.json -->\nold table\n"
        "<!-- end generated -->\noutro\n"
    )
    assert render_docs.update(page) == ["page.md: bench_scale.py scale.json"]
    text = page.read_text()
    assert "old table" not in text and "| documents |" in text
    assert text.startswith("intro\n") and text.endswith("<!-- end generated -->\noutro\n")
    assert render_docs.update(page) == []  # now current


def test_links_between_pages_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
