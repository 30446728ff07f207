"""Build the wheel with `python -m build`, install it in a fresh venv, and run the test suite
against the installed package (not the checkout).

The fresh venv gets the wheel only; numpy, scipy, hnswlib, pytest and the other test
dependencies are made visible from the development venv through a .pth line appended after
the venv's own site-packages (offline, and `import muvera` still finds the wheel first).
tests/conftest.py checks that muvera is imported from the fresh venv
(MUVERA_EXPECT_INSTALLED). The notebook tests (a Jupyter kernel of their own) and the wheel
test itself are left out.

Usage: .venv/bin/python .ci/test_wheel.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INI = """[pytest]
addopts = -ra --strict-markers -p no:cacheprovider
markers =
    slow: slow tests
    torch: tests that need torch installed
filterwarnings = error::RuntimeWarning
"""


def run(*cmd: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, text=True, **kwargs)  # type: ignore[call-overload]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="muvera-wheel-") as tmp_name:
        tmp = Path(tmp_name)
        run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
            str(tmp / "dist"), str(ROOT), stdout=subprocess.DEVNULL)  # fmt: skip
        (wheel,) = (tmp / "dist").glob("*.whl")
        print(f"built {wheel.name}")
        venv = tmp / "venv"
        run(sys.executable, "-m", "venv", "--without-pip", str(venv))
        python = str(venv / "bin" / "python")
        run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
            "--no-index", "-q", str(wheel))  # fmt: skip
        purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                      capture_output=True).stdout.strip()  # fmt: skip
        (Path(purelib) / "dev-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
        (tmp / "pytest.ini").write_text(INI)
        tests = ROOT / "tests"
        env = dict(os.environ, MUVERA_EXPECT_INSTALLED=purelib)
        done = subprocess.run(
            [python, "-m", "pytest", "-c", str(tmp / "pytest.ini"), "--rootdir", str(tests),
             "--confcutdir", str(tests), "-m", "not slow", "-q",
             "--ignore", str(tests / "test_notebooks.py"),
             "--ignore", str(tests / "test_wheel.py"), str(tests)],
            cwd=tmp, env=env, check=False,
        )  # fmt: skip
        return done.returncode


if __name__ == "__main__":
    sys.exit(main())
