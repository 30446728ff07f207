"""The ``serve`` subcommand: the index and its model behind HTTP until interrupted."""

from __future__ import annotations

import argparse
import os

from ..errors import MuveraError
from .common import _load_model, _Status


def _cmd_serve(args: argparse.Namespace, status: _Status) -> int:
    from ..index import Index
    from ..server import create_app

    try:
        import uvicorn
    except ImportError:
        raise MuveraError(
            "muvera serve needs FastAPI and uvicorn: pip install 'muvera-toolkit[server]'"
        ) from None
    with Index.open(args.index, mode="r") as index:
        meta = index.metadata
    model = None
    if not args.no_model:
        name = args.model or meta.get("model")
        if not name:
            raise MuveraError(f"index {args.index} records no model; pass --model or --no-model")
        status(f"loading {name} ...")
        model = _load_model(name, args, None if args.model else meta.get("model_options"))
    api_key = args.api_key or os.environ.get("MUVERA_API_KEY") or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        status(f"warning: serving on {args.host} without an API key (--api-key)")
    app = create_app(
        args.index, model, writable=args.writable, api_key=api_key,
        max_request_bytes=args.max_request_bytes,
    )  # fmt: skip
    status(
        f"serving {args.index} on http://{args.host}:{args.port}/ "
        f"({'read-write' if args.writable else 'read-only'}; Ctrl-C stops)"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")
    return 0
