"""The index: :class:`Index` (the front), its folder format (:mod:`.manifest`) and its
per-document records (:mod:`.records`)."""

from .front import Index
from .reading import Document
from .results import SearchResult

__all__ = ["Document", "Index", "SearchResult"]
