from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "golden" / "fde_reference.npz"


@pytest.fixture(scope="session")
def golden():
    if not GOLDEN.is_file():
        pytest.skip(f"golden vectors not found at {GOLDEN} (../shared is absent)")
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
