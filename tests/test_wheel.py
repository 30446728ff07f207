"""The wheel: `python -m build` makes one that installs in a fresh venv, carries every CPU
variant of the kernels (tagged py3-none-<platform>: ctypes, no CPython ABI) and the demo
corpus, and runs there."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

from muvera import native

ROOT = Path(__file__).resolve().parents[1]
CHECK = """
import sys
import muvera
from muvera import FDEConfig, FDEEncoder, native
from muvera.cli.demo import _DEMO_CORPUS
kernel = native.load()
assert kernel is not None, "no compiled kernel in the installed wheel"
assert sys.prefix in str(kernel.path), kernel.path
assert FDEEncoder(FDEConfig(dimension=8)).kernel == "native"
assert (_DEMO_CORPUS / "corpus.jsonl").is_file(), _DEMO_CORPUS
print(kernel.variant, muvera.__file__)
"""


def test_built_wheel_installs_in_a_fresh_venv_and_loads_its_kernels(tmp_path):
    pytest.importorskip("build")
    pytest.importorskip("hatchling")
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    src = tmp_path / "src"  # a copy: building never touches the checkout
    src.mkdir()
    for name in ("pyproject.toml", "hatch_build.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "muvera", src / "muvera", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist),
         str(src)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = dist.glob("*.whl")
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert wheel.name.endswith(f"-py3-none-{platform}.whl"), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    for variant in native.variants.build_variants():
        assert f"muvera/native/{native.library_filename(variant)}" in names
    assert "muvera/data/scifact-sample/corpus.jsonl" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "-q", str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    # numpy and scipy from this environment (offline), appended after the venv's own
    # site-packages, so that `import muvera` finds the installed wheel, not the checkout.
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "deps.pth").write_text(str(Path(np.__file__).parents[1]) + "\n")
    out = subprocess.run(
        [str(python), "-c", CHECK], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout
    variant, location = out.split()
    assert location.startswith(purelib)
    assert native.LEVELS[variant] == min(native.cpu_level(), max(native.LEVELS.values()))
