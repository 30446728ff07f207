"""The ``muvera`` entry point: parse, dispatch, turn errors into one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..errors import MuveraError
from .commands import _cmd_encode, _cmd_eval, _cmd_index, _cmd_search
from .common import _Status
from .demo import _cmd_demo
from .manage import _cmd_add, _cmd_delete, _cmd_info
from .parser import _build_parser
from .serve import _cmd_serve

__all__ = ["main"]

_COMMANDS = {
    "index": _cmd_index,
    "add": _cmd_add,
    "delete": _cmd_delete,
    "info": _cmd_info,
    "serve": _cmd_serve,
    "search": _cmd_search,
    "eval": _cmd_eval,
    "encode": _cmd_encode,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input or failure, 130 interrupted)."""
    args = _build_parser().parse_args(argv)
    status = _Status(args.quiet)
    try:
        return _COMMANDS[args.command](args, status)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("muvera: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, (MuveraError, OSError)):
            message = str(exc)
        else:
            message = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
        print(f"muvera: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
