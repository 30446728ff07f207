"""Loader of the optional compiled FDE kernel (``muvera/_kernels.c``, plain C via ctypes).

The library is built when the package is installed (``hatch_build.py``) if a C compiler is
available; without it everything runs on the numpy kernel, with the same results up to
float32 rounding. Set ``MUVERA_NATIVE=0`` to force the numpy kernel.

This module imports only the standard library: the build hook loads it by path to learn
the library's file name.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["ABI_VERSION", "NativeKernel", "default_threads", "library_filename", "load"]

ABI_VERSION = 4  # must equal MUVERA_ABI_VERSION in _kernels.c


def library_filename(platform: str | None = None) -> str:
    """File name of the compiled kernel next to this module, e.g. ``libmuvera_kernels.so``.

    >>> library_filename("linux")
    'libmuvera_kernels.so'
    """
    platform = sys.platform if platform is None else platform
    if platform.startswith("win"):
        return "muvera_kernels.dll"
    if platform == "darwin":
        return "libmuvera_kernels.dylib"
    return "libmuvera_kernels.so"


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


class NativeKernel:
    """Typed wrapper of the compiled library's entry points."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self.path = path
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._encode = lib.muvera_fde_encode
        self._encode.restype = i64
        self._encode.argtypes = [
            *(ptr, i64, ptr, i64, ptr, i64, i64, i64, ptr, i64, i64, i64, ptr, i64)
        ]
        self._maxsim = lib.muvera_maxsim
        self._maxsim.restype = i64
        self._maxsim.argtypes = [ptr, i64, i64, ptr, ptr, i64, ptr, ptr, i64, ptr, i64]
        self._graph = lib.muvera_graph_search
        self._graph.restype = i64
        self._graph.argtypes = [
            *(ptr, ptr, i64, ptr, i64, ptr, ptr, i64, ptr, i64, i64, i64, i64),
            *(ptr, i64, i64, i64, ptr, ptr, ptr, i64),
        ]

    def fde_encode(
        self,
        X: Any,
        sketch: Any,
        offsets: Any,
        num_repetitions: int,
        num_simhash_projections: int,
        projection: Any,
        block_dimension: int,
        average: bool,
        fill: bool,
        out: Any,
        n_threads: int = 1,
    ) -> None:
        """FDEs of the items ``offsets`` delimits (see ``muvera_fde_encode`` in _kernels.c).

        ``X`` float32 ``(N, d)``, ``sketch`` float32 ``(N, k*R)``, ``offsets`` int64
        ``(n+1,)``, ``projection`` float32 ``(R, d, p)`` or None (identity), ``out`` float32
        ``(n, R * 2**k * p)``; all C-contiguous (checked by the caller). Items are split
        between ``n_threads`` threads. The GIL is released while it runs.
        """
        n_items = offsets.shape[0] - 1
        status = self._encode(
            X.ctypes.data,
            X.shape[1],
            sketch.ctypes.data,
            sketch.shape[1],
            offsets.ctypes.data,
            n_items,
            num_repetitions,
            num_simhash_projections,
            None if projection is None else projection.ctypes.data,
            block_dimension,
            int(average),
            int(fill),
            out.ctypes.data,
            n_threads,
        )
        if status != 0:
            raise MemoryError("muvera native kernel: could not allocate its scratch memory")

    def maxsim(
        self,
        tokens: Any,
        offsets: Any,
        lengths: Any,
        queries: Any,
        query_offsets: Any,
        out: Any,
        n_threads: int,
    ) -> None:
        """Exact MaxSim of every query against every document span (see ``muvera_maxsim``).

        ``tokens`` float32 or float16 ``(rows, d)`` (a memory map is read in place);
        document ``j`` is rows ``offsets[j] .. offsets[j] + lengths[j]`` (int64);
        ``queries`` float32 ``(query rows, d)`` with ``query_offsets`` int64 ``(n_q + 1,)``;
        ``out`` float32 ``(n_q, n_docs)``. All C-contiguous (checked by the caller). The
        GIL is released while it runs.
        """
        status = self._maxsim(
            tokens.ctypes.data,
            int(tokens.dtype.itemsize == 2),
            tokens.shape[1],
            offsets.ctypes.data,
            lengths.ctypes.data,
            offsets.shape[0],
            queries.ctypes.data,
            query_offsets.ctypes.data,
            query_offsets.shape[0] - 1,
            out.ctypes.data,
            n_threads,
        )
        if status != 0:
            raise MemoryError("muvera native kernel: could not allocate its scratch memory")

    def graph_search(
        self,
        codes: Any,
        meta: Any,
        links0: Any,
        upper: Any,
        upper_start: Any,
        deleted: Any,
        has_deleted: bool,
        entry: int,
        max_level: int,
        queries: Any,
        ef: int,
        out_rows: Any,
        out_scores: Any,
        out_counts: Any,
        n_threads: int,
    ) -> None:
        """HNSW search over int8 codes (see ``muvera_graph_search``).

        ``codes`` int8 ``(n, d)``, ``meta`` float32 ``(n, 2)`` (scale, code sum),
        ``links0`` uint32 ``(n, max_m0 + 1)``, ``upper`` uint32 ``(lists, max_m + 1)``,
        ``upper_start`` int64 ``(n,)``, ``deleted`` uint8 ``(n,)`` (``has_deleted``: any
        set), ``queries`` float32
        ``(n_q, d)``; ``out_rows`` int64 and ``out_scores`` float32 ``(n_q, k)``,
        ``out_counts`` int64 ``(n_q,)``. All C-contiguous (checked by the caller). Queries
        are split between ``n_threads`` threads; the GIL is released while it runs.
        """
        n, d = codes.shape
        status = self._graph(
            codes.ctypes.data,
            meta.ctypes.data,
            d,
            links0.ctypes.data,
            links0.shape[1],
            upper.ctypes.data,
            upper_start.ctypes.data,
            upper.shape[1],
            deleted.ctypes.data,
            int(has_deleted),
            n,
            entry,
            max_level,
            queries.ctypes.data,
            queries.shape[0],
            ef,
            out_rows.shape[1],
            out_rows.ctypes.data,
            out_scores.ctypes.data,
            out_counts.ctypes.data,
            n_threads,
        )
        if status != 0:
            raise MemoryError("muvera native kernel: could not allocate its scratch memory")


@functools.lru_cache(maxsize=1)
def load() -> NativeKernel | None:
    """The compiled kernel, or None when it is not built, not loadable, of another ABI
    version, or disabled with ``MUVERA_NATIVE=0``. Loaded once, on first use."""
    if os.environ.get("MUVERA_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    path = Path(__file__).with_name(library_filename())
    if not path.is_file():
        return None
    try:
        lib = ctypes.CDLL(str(path))
        version = lib.muvera_abi_version
        version.restype = ctypes.c_int64
        version.argtypes = []
        if int(version()) != ABI_VERSION:
            return None
        return NativeKernel(lib, path)
    except (OSError, AttributeError):
        return None
