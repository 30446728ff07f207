"""What machine a benchmark ran on: CPU model, the SIMD flags that matter to the kernels,
cores, and the compiled-kernel variant muvera loaded (printed and stored with results);
and what a run used of it (bytes of a folder, a process's memory)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni")


def machine() -> dict[str, Any]:
    """CPU model and flags (from /proc/cpuinfo where it exists), cores, kernel variant."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    variant = None
    try:
        from muvera import native  # this repository's layout

        kernel = native.load()
        variant = kernel.variant if kernel is not None else "numpy"
    except ImportError:  # an older muvera (one -march=native library)
        from muvera import _native  # type: ignore[attr-defined]

        variant = "native (-march=native build)" if _native.load() is not None else "numpy"
    return {
        "cpu": model,
        "flags": [f for f in FLAGS if f in flags],
        "cpus": os.cpu_count(),
        "kernel_variant": variant,
    }


def describe(info: dict[str, Any]) -> str:
    flags = " ".join(info["flags"]) or "none of " + " ".join(FLAGS)
    return (
        f"CPU: {info['cpu']} ({info['cpus']} CPUs; {flags}); "
        f"muvera kernels: {info['kernel_variant']}"
    )


def dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def memory(field: str) -> int:
    """Bytes of a /proc/self/status field: VmHWM (peak RSS of this process image; unlike
    ru_maxrss it starts afresh at exec) or VmRSS (0 where there is no /proc)."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0
