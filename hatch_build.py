"""Build hook: compiles muvera's optional C kernels (muvera/native/*.c) into the wheel, once
per CPU variant (muvera/native/variants.py: generic, plus avx2 and avx512 on x86-64); the
loader picks the best one the running CPU supports, so a wheel runs on any CPU of its
platform. Nothing is tuned for the building machine unless asked (MUVERA_CFLAGS).

The kernels are plain C99 loaded with ctypes: they need no Python headers and no CPython
ABI, so the wheel is tagged py3-none-<platform>. A missing or failing C compiler only
prints a warning: muvera then runs on numpy.

Environment:
  MUVERA_NO_EXTENSION=1  skip the kernels (pure-Python wheel).
  MUVERA_VARIANTS=a,b    build only these variants (default: all for the platform).
  MUVERA_CFLAGS="..."    extra compiler flags for every variant (e.g. -march=native for a
                         wheel that only this machine runs).
  CC                     the C compiler (default: cc).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

BASE_FLAGS = ["-O3", "-std=gnu99", "-fPIC", "-shared", "-fvisibility=hidden", "-pthread"]


def load_variants(root: Path) -> ModuleType:
    """muvera/native/variants.py, loaded by path (the package is not importable yet)."""
    path = root / "muvera" / "native" / "variants.py"
    spec = importlib.util.spec_from_file_location("_muvera_variants", path)
    if spec is None or spec.loader is None:  # pragma: no cover
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_kernel(root: Path, out: Path, variant: str = "generic") -> str | None:
    """Compile the kernels for ``variant`` into ``out``; return None on success, else why not."""
    if sys.platform.startswith("win"):
        return "the C kernels are not built on Windows"
    cc = shlex.split(os.environ.get("CC", "cc"))
    if not cc or shutil.which(cc[0]) is None:
        return f"no C compiler ({cc[0] if cc else 'CC is empty'})"
    variants = load_variants(root)
    if variant not in variants.VARIANTS:
        return f"unknown variant {variant!r}"
    flags = [*BASE_FLAGS, *variants.VARIANTS[variant]]
    flags += shlex.split(os.environ.get("MUVERA_CFLAGS", ""))
    source_dir = root / "muvera" / "native"
    sources = [str(source_dir / name) for name in variants.SOURCES]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    cmd = [*cc, *flags, "-o", str(tmp), *sources, "-lm"]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        return f"{shlex.join(cmd)}: {exc}"
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        return f"{shlex.join(cmd)} failed:\n{result.stderr.strip()}"
    tmp.replace(out)  # atomic: a running process never sees a half-written library
    return None


def wanted_variants(root: Path) -> list[str]:
    variants = load_variants(root)
    names: list[str] = variants.build_variants()
    asked = os.environ.get("MUVERA_VARIANTS", "").strip()
    if asked:
        names = [v for v in (s.strip() for s in asked.split(",")) if v]
    return names


def wheel_tag() -> str:
    """``py3-none-<platform>``: the libraries are loaded with ctypes, not as extensions."""
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"py3-none-{platform}"


class CustomBuildHook(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("MUVERA_NO_EXTENSION"):
            return
        root = Path(self.root)
        variants = load_variants(root)
        built = []
        for variant in wanted_variants(root):
            name = variants.library_filename(variant)
            # Editable installs import the sources, so the libraries go next to them.
            editable = version == "editable"
            where = root / "muvera" / "native" if editable else root / "build" / "native"
            error = compile_kernel(root, where / name, variant)
            if error is not None:
                self.app.display_warning(f"muvera: {variant} kernels not built ({error})")
                continue
            built.append(variant)
            if version != "editable":
                build_data["force_include"][str(where / name)] = f"muvera/native/{name}"
        if "generic" not in built:
            self.app.display_warning("muvera: no generic kernels, so none is used: numpy only")
            return
        build_data["pure_python"] = False
        build_data["tag"] = wheel_tag()
