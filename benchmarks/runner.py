"""The command line every results-writing benchmark shares: ``--out JSON`` (where results go)
and ``--markdown JSON`` (print the table of saved results, what render_docs.py runs)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def bench_main(
    doc: str,
    results: str,
    measure: Callable[[argparse.Namespace], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Parse the arguments, then print a saved table (``--markdown``) or measure, write the
    JSON to ``--out`` (default ``benchmarks/results/<results>``), print the table and
    re-render the docs pages built from it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / results)
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print a results table")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    result = measure(args)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"wrote {args.out}")
    from render_docs import refresh

    refresh(args.out)
