"""The index: :class:`Index` (the front), its folder format (:mod:`.manifest`) and its
per-document records (:mod:`.records`)."""

from .front import Index
from .reading import Document
from .results import DEFAULT_CANDIDATES, SearchResult

__all__ = ["DEFAULT_CANDIDATES", "Document", "Index", "SearchResult"]
