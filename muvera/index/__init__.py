"""The index: :class:`Index` (the front), its folder format (:mod:`.manifest`) and its
per-document records (:mod:`.records`)."""

from .front import Index, SearchResult

__all__ = ["Index", "SearchResult"]
