"""The CPU variants of the compiled kernels and their library file names.

Standard library only, and no imports from the package: the build hook (``hatch_build.py``)
loads this file by path to learn what to compile. Every variant is built from the same C
sources with other compiler flags; the loader picks the best one the running CPU supports
(the CPU check runs inside the always-safe ``generic`` library).
"""

from __future__ import annotations

import platform as _platform
import sys

__all__ = ["ABI_VERSION", "LEVELS", "VARIANTS", "build_variants", "library_filename"]

ABI_VERSION = 16  # must equal MUVERA_ABI_VERSION in muvera.h
SOURCES = ("pool.c", "fde.c", "maxsim.c", "graph.c", "cells.c", "codes.c", "select.c")
_AVX2 = ("-mavx2", "-mfma", "-mf16c")
_AVX512 = (*_AVX2, "-mavx512f", "-mavx512dq", "-mavx512cd", "-mavx512bw", "-mavx512vl",
           "-mavx512vnni")  # fmt: skip
VARIANTS: dict[str, tuple[str, ...]] = {"generic": (), "avx2": _AVX2, "avx512": _AVX512}
LEVELS = {"generic": 0, "avx2": 1, "avx512": 2}  # muvera_cpu_level / muvera_compiled_level


def build_variants(machine: str | None = None) -> list[str]:
    """The variants worth building on ``machine`` (``platform.machine()``): all three on
    x86-64, only ``generic`` elsewhere.

    >>> build_variants("x86_64"), build_variants("aarch64")
    (['generic', 'avx2', 'avx512'], ['generic'])
    """
    machine = (_platform.machine() if machine is None else machine).lower()
    return list(VARIANTS) if machine in ("x86_64", "amd64") else ["generic"]


def library_filename(variant: str, platform: str | None = None) -> str:
    """File name of one compiled variant next to the loader.

    >>> library_filename("avx2", "linux")
    'libmuvera_avx2.so'
    """
    platform = sys.platform if platform is None else platform
    if platform.startswith("win"):
        return f"muvera_{variant}.dll"
    if platform == "darwin":
        return f"libmuvera_{variant}.dylib"
    return f"libmuvera_{variant}.so"
