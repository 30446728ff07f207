"""The layering of docs/architecture.md, enforced: which package may import which (one-way
arrows), the loader's standard-library-only rule, no torch at module level outside the
torch steps, and module sizes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "muvera"

# room -> the rooms it may import (besides itself)
ALLOWED = {
    "_version": set(),
    "errors": set(),
    "native": set(),
    "files": {"errors", "_version"},
    "batch": {"errors"},
    "synthetic": set(),
    "fde": {"errors", "_version", "files", "batch", "native"},
    "token_codes": {"errors", "native"},
    "cells": {"errors", "native"},
    "postings": {"errors", "native"},
    "scoring": {"errors", "batch", "native", "token_codes"},
    "stores": {
        *("errors", "files", "batch", "native", "scoring", "token_codes", "cells", "postings"),
    },
    "index": {"errors", "_version", "files", "batch", "fde", "stores"},
    "models": {"errors"},
    "eval": {"errors"},
    "cli": {"errors", "_version", "fde", "index", "models", "eval", "synthetic", "server"},
    "server": {"errors", "index"},
    "__init__": {"errors", "_version", "fde", "index", "models", "scoring", "native"},
}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "data" not in p.parts)


def _room(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(muvera room or top-level module, at module level?) for every import of ``path``."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                name = ".".join([*base, node.module] if node.module else base)
                if not node.module:  # from .. import x
                    out += [(f"{name}.{a.name}", id(node) in top_level) for a in node.names]
                    continue
            else:
                name = node.module or ""
            out.append((name, id(node) in top_level))
    return out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layering(path):
    room = _room(path)
    for name, _ in _imports(path):
        parts = name.split(".")
        if parts[0] != "muvera" or len(parts) < 2:
            continue
        target = parts[1]
        assert target == room or target in ALLOWED[room], f"{room} imports muvera.{target}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "native").glob("*.py")), ids=lambda p: p.name)
def test_the_native_loader_needs_only_the_standard_library(path):
    import sys

    for name, _ in _imports(path):
        top = name.split(".")[0]
        assert top in sys.stdlib_module_names or name.startswith("muvera.native"), name


def test_torch_is_imported_at_module_level_only_by_the_torch_steps():
    for path in MODULES:
        for name, top_level in _imports(path):
            optional = ("torch", "transformers", "hnswlib", "qdrant_client", "qdrant_edge",
                        "fastapi", "starlette", "uvicorn")  # fmt: skip
            if name.split(".")[0] in optional:
                assert not top_level or path.name == "torch_steps.py", (path, name)


def test_modules_stay_small():
    sizes = {p: len(p.read_text().splitlines()) for p in MODULES}
    sizes.update({p: len(p.read_text().splitlines()) for p in (PACKAGE / "native").glob("*.c")})
    big = {str(p.relative_to(PACKAGE)): n for p, n in sizes.items() if n > 480}
    assert not big, f"modules over ~400 lines: {big}"
