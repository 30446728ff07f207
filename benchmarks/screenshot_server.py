"""The screenshot of `muvera serve`'s search page in docs/ (docs/server-page.png).

Indexes the bundled SciFact sample (``muvera/data/scifact-sample``) with the shared model
(``../shared/models/minilm-colbert-128``), serves it on a free local port, and has headless
Chromium load ``/?q=...`` (the page searches on load) and take the screenshot.

Usage: ``python benchmarks/screenshot_server.py [--query "..."] [--out docs/server-page.png]``
(needs the ``server`` extra and Debian's ``chromium``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", default="vitamin D deficiency and bone health")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "server-page.png")
    args = parser.parse_args()
    import uvicorn

    from muvera import ColBERT, FDEConfig, Index
    from muvera.eval import document_text, load_corpus
    from muvera.server import create_app

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (Debian: apt install chromium)")
    model = ColBERT(SHARED / "models" / "minilm-colbert-128", device="cpu")
    corpus = load_corpus(ROOT / "muvera" / "data" / "scifact-sample")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        with Index.create(path, FDEConfig(dimension=model.dimension)) as index:
            ids = list(corpus)
            tokens = model.encode_documents([document_text(corpus[d]) for d in ids])
            index.add(ids, tokens, [corpus[d] for d in ids])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        server = uvicorn.Server(
            uvicorn.Config(create_app(path, model), port=port, log_level="error")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/?q={urllib.parse.quote(args.query)}"
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=10000", "--window-size=1100,760",
             f"--screenshot={args.out}", url],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        server.should_exit = True
        thread.join(10)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
