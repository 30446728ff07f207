"""Write tests/data/index-v10: an index with residual4lm tokens (format version 10:
residual4's nibbles decoding to Lloyd-Max levels) for tests/test_formats.py.

Run from the repository root: ``python tests/data/make_index_v10.py``. The corpus and
steps of make_index_v6.py (600 planted documents of 50-70 tokens in two batches: the first
keeps the centre, the second fits the cells and is stored as residuals), another seed;
rerun only to replace the fixture on purpose.
"""

from __future__ import annotations

from pathlib import Path

from make_index_v6 import write

OUT = Path(__file__).parent / "index-v10"

if __name__ == "__main__":
    write(OUT, "residual4lm", seed=17)
