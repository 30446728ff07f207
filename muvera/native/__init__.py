"""The compiled kernels (C via ctypes): FDE encoding, exact MaxSim and the int8 graph walk,
built per CPU variant and picked at run time. See :mod:`muvera.native.loader`."""

from .bindings import NativeLibrary
from .loader import built_variants, cpu_level, default_threads, load, load_variant
from .variants import ABI_VERSION, LEVELS, VARIANTS, library_filename

__all__ = [
    "ABI_VERSION",
    "LEVELS",
    "VARIANTS",
    "NativeLibrary",
    "built_variants",
    "cpu_level",
    "default_threads",
    "library_filename",
    "load",
    "load_variant",
]
