"""The Python examples of the README and of docs/ run as written (Hub ids swapped for the
shared local model)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
HUB_ID = "neuml/colbert-muvera-micro"
LOCAL_MODEL = SHARED / "models" / "minilm-colbert-128"


def _blocks() -> list[tuple[Path, str]]:
    return [
        (page, block)
        for page in PAGES
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    ]


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_python_blocks_run(tmp_path, monkeypatch, index):
    page, block = _blocks()[index]
    if HUB_ID in block:
        pytest.importorskip("transformers")
        if not LOCAL_MODEL.is_dir():
            pytest.skip("the shared model is absent (and the Hub is out of reach)")
        block = block.replace(HUB_ID, str(LOCAL_MODEL))
    monkeypatch.chdir(tmp_path)  # examples may write files (encoder.npz)
    exec(compile(block, str(page), "exec"), {})


def test_readme_names_the_test_command_ci_runs():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in text
    assert "make test" in ci
