"""``muvera serve``: an index and its model behind HTTP (FastAPI; the ``server`` extra)."""

from .app import create_app

__all__ = ["create_app"]
