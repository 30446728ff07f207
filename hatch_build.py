"""Build hook: compiles muvera's optional C kernel (muvera/_kernels.c) into the wheel.

The kernel is plain C99 loaded with ctypes, so it needs no Python headers. A missing or
failing C compiler only prints a warning: muvera then runs on its numpy kernel.

Environment:
  MUVERA_NO_EXTENSION=1  skip the kernel (pure-Python wheel).
  MUVERA_PORTABLE=1      do not tune for the building CPU (no -march=native); use it when
                         building a wheel for other machines.
  CC                     the C compiler (default: cc).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _library_filename(root: Path) -> str:
    spec = importlib.util.spec_from_file_location("_muvera_native", root / "muvera" / "_native.py")
    if spec is None or spec.loader is None:  # pragma: no cover
        raise RuntimeError("cannot load muvera/_native.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    name: str = module.library_filename()
    return name


def compile_kernel(root: Path, out: Path) -> str | None:
    """Compile muvera/_kernels.c into ``out``; return None on success, else why not."""
    if sys.platform.startswith("win"):
        return "the C kernel is not built on Windows"
    cc = shlex.split(os.environ.get("CC", "cc"))
    if not cc or shutil.which(cc[0]) is None:
        return f"no C compiler ({cc[0] if cc else 'CC is empty'})"
    flags = ["-O3", "-std=gnu99", "-fPIC", "-shared", "-fvisibility=hidden", "-pthread"]
    if not os.environ.get("MUVERA_PORTABLE"):
        flags.append("-march=native")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    cmd = [*cc, *flags, "-o", str(tmp), str(root / "muvera" / "_kernels.c")]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        return f"{shlex.join(cmd)}: {exc}"
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        return f"{shlex.join(cmd)} failed:\n{result.stderr.strip()}"
    tmp.replace(out)  # atomic: a running process never sees a half-written library
    return None


class CustomBuildHook(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("MUVERA_NO_EXTENSION"):
            return
        root = Path(self.root)
        name = _library_filename(root)
        # Editable installs import the sources, so the library goes next to them.
        out = (root / "muvera" if version == "editable" else root / "build" / "native") / name
        error = compile_kernel(root, out)
        if error is not None:
            self.app.display_warning(f"muvera: C kernel not built ({error}); using numpy")
            return
        if version != "editable":
            build_data["force_include"][str(out)] = f"muvera/{name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
