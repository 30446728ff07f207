"""Text to multi-vectors: :class:`ColBERT` in front of one module per checkpoint layout
(:mod:`.pylate`, :mod:`.stanford`, :mod:`.plain`); :mod:`.checkpoint` reads the files."""

from .colbert import ColBERT, ColBERTSettings

__all__ = ["ColBERT", "ColBERTSettings"]
