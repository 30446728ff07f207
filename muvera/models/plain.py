"""Plain encoders (transformers or sentence-transformers, no Dense): token states as they
are, no prefixes, no expansion, no skiplist (unless given)."""

from __future__ import annotations

from typing import Any

__all__ = ["plain_defaults"]


def plain_defaults(max_length: int) -> dict[str, Any]:
    """Settings of a plain encoder whose inputs hold at most ``max_length`` tokens."""
    return {
        "query_prefix": "",
        "document_prefix": "",
        "query_length": max_length,
        "document_length": max_length,
        "do_query_expansion": False,
        "attend_to_expansion_tokens": False,
        "skiplist_words": [],
    }
