"""Loads the compiled kernels, picking the best CPU variant at run time (as faiss's loader
does): ``avx512`` (AVX-512 F/DQ/CD/BW/VL + VNNI), ``avx2`` (AVX2, FMA, F16C) or ``generic``.

The libraries are built when the package is installed (``hatch_build.py``), one per
variant, if a C compiler is available. The running CPU is asked by the ``generic`` library
(CPUID and XGETBV), which every x86-64 CPU can run. Without any library everything runs
on numpy, with the same results up to float32 rounding, and a warning says so once.

Environment: ``MUVERA_NATIVE=0`` forces numpy (no warning); ``MUVERA_CPU=generic|avx2|
avx512`` picks a variant (one the CPU cannot run, or that is not built, is refused with a
warning and the best one is used); ``MUVERA_NUM_THREADS`` sets the kernels' threads;
``MUVERA_NATIVE_DIR`` loads the libraries from another folder (e.g. AddressSanitizer
builds, ``make test-asan``).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

from .bindings import NativeLibrary
from .variants import ABI_VERSION, LEVELS, library_filename

__all__ = ["built_variants", "cpu_level", "default_threads", "load", "load_variant"]

log = logging.getLogger("muvera")
_HERE = Path(__file__).resolve().parent
_DISABLED = ("0", "false", "no", "off")


def default_threads() -> int:
    """Threads for the compiled kernels: ``MUVERA_NUM_THREADS``, else the CPUs this process
    may run on (asked once per process: a search calls this several times)."""
    value = os.environ.get("MUVERA_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return _usable_cpus(os.getpid())


@functools.lru_cache(maxsize=4)
def _usable_cpus(pid: int) -> int:
    del pid  # the cache key: a forked child asks again
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def library_dir() -> Path:
    """Where the libraries are loaded from: ``MUVERA_NATIVE_DIR``, else next to this module."""
    return Path(os.environ.get("MUVERA_NATIVE_DIR") or _HERE)


def built_variants() -> list[str]:
    """The variants whose library file is in :func:`library_dir`, lowest level first."""
    return [v for v in LEVELS if (library_dir() / library_filename(v)).is_file()]


def _open(variant: str) -> tuple[ctypes.CDLL, Path] | None:
    path = library_dir() / library_filename(variant)
    if not path.is_file():
        return None
    try:
        lib = ctypes.CDLL(str(path))
        for name in ("muvera_abi_version", "muvera_compiled_level", "muvera_cpu_level"):
            getattr(lib, name).restype = ctypes.c_int64
            getattr(lib, name).argtypes = []
        if lib.muvera_abi_version() != ABI_VERSION:
            log.debug("muvera: %s has another ABI version; not used", path)
            return None
        if lib.muvera_compiled_level() != LEVELS[variant]:
            log.debug("muvera: %s was not compiled for %s; not used", path, variant)
            return None
    except (OSError, AttributeError) as exc:
        log.debug("muvera: cannot load %s (%s)", path, exc)
        return None
    return lib, path


@functools.lru_cache(maxsize=1)
def cpu_level() -> int:
    """The highest variant level (``variants.LEVELS``) the running CPU supports, asked of
    the generic library; 0 when it is not built."""
    opened = _open("generic")
    return int(opened[0].muvera_cpu_level()) if opened is not None else 0


@functools.cache
def load_variant(variant: str) -> NativeLibrary | None:
    """One variant's kernels, or None when it is not built, not loadable, of another ABI
    version, or beyond what this CPU runs (loading it could crash the process)."""
    if variant not in LEVELS or LEVELS[variant] > cpu_level():
        return None
    opened = _open(variant)
    return NativeLibrary(opened[0], opened[1], variant) if opened is not None else None


@functools.lru_cache(maxsize=1)
def load() -> NativeLibrary | None:
    """The best compiled kernels for this CPU (see the module docstring), loaded once, on
    first use; None means numpy."""
    if os.environ.get("MUVERA_NATIVE", "1").strip().lower() in _DISABLED:
        log.debug("muvera: compiled kernels disabled by MUVERA_NATIVE; using numpy")
        return None
    forced = os.environ.get("MUVERA_CPU", "").strip().lower()
    if forced:
        kernel = load_variant(forced)
        if kernel is not None:
            log.debug("muvera: compiled kernels %s (MUVERA_CPU) from %s", forced, kernel.path)
            return kernel
        log.warning(
            "muvera: MUVERA_CPU=%s is not a built variant this CPU runs (built: %s, CPU "
            "level %d); using the best available",
            forced, ", ".join(built_variants()) or "none", cpu_level(),
        )  # fmt: skip
    for variant in sorted(LEVELS, key=LEVELS.__getitem__, reverse=True):
        kernel = load_variant(variant)
        if kernel is not None:
            log.debug("muvera: compiled kernels %s from %s", variant, kernel.path)
            return kernel
    log.warning(
        "muvera: the compiled kernels are not built (no C compiler when muvera was "
        "installed?); using numpy, which is several times slower. Reinstall with a C "
        "compiler on PATH, or set MUVERA_NATIVE=0 to silence this."
    )
    return None
