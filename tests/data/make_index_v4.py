"""Write tests/data/index-v4: indexes with quantized token codes (format version 4) for
tests/test_formats.py.

Run from the repository root: ``python tests/data/make_index_v4.py`` (see
``make_index_v3.py``, whose ``write`` it uses).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from make_index_v3 import write

OUT = Path(__file__).parent / "index-v4"


def main() -> None:
    write(
        OUT,
        {"seed": 12},
        {
            "exact-int8": {"store": "exact", "token_dtype": "int8"},
            "hnswlib-int4": {"store": "hnswlib", "token_dtype": "int4"},
        },
        lambda index: {"tokens_d5": index.get(["d5"])[0].tokens.tolist()},
    )


if __name__ == "__main__":
    main()
