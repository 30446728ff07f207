from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import native_kernel_available

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

if os.environ.get("MUVERA_EXPECT_INSTALLED"):  # .ci/test_wheel.py: test the installed wheel
    import muvera

    if not muvera.__file__.startswith(os.environ["MUVERA_EXPECT_INSTALLED"]):
        raise RuntimeError(f"muvera imported from {muvera.__file__}, not the installed wheel")
GOLDEN = SHARED / "golden" / "fde_reference.npz"


@pytest.fixture(scope="session")
def golden():
    if not GOLDEN.is_file():
        pytest.skip(f"golden vectors not found at {GOLDEN} (../shared is absent)")
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="session", params=["numpy", "native"])
def kernel(request):
    """Each CPU FDE kernel; the compiled one is required in CI, where .ci/run builds it."""
    if request.param == "native":
        _require_native()
    return request.param


@pytest.fixture(params=["numpy", "native"])
def maxsim_kernel(request, monkeypatch):
    """Runs a test with the compiled kernels (MaxSim, FDE) or with numpy only."""
    from muvera import native

    if request.param == "numpy":
        monkeypatch.setattr(native, "load", lambda: None)
    else:
        _require_native()
    return request.param


def _require_native() -> None:
    """Skip without the compiled kernel; in CI, where .ci/run builds it, fail instead."""
    if not native_kernel_available():
        if os.environ.get("CI"):
            pytest.fail("the compiled kernel is not built (CI must build it)")
        pytest.skip("the compiled kernel is not built (no C compiler at install time)")
