"""Text in, text out: :class:`muvera.Index` methods that encode with a
:class:`muvera.ColBERT` model before adding or searching."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import MuveraError
from .records import json_payload

if TYPE_CHECKING:
    from .results import SearchResult

__all__ = ["TextMethods"]


class TextMethods:
    """Mixed into :class:`muvera.Index` (which provides ``add``, ``search`` and
    ``token_dimension``)."""

    token_dimension: int

    def add(self, ids: Any, multivectors: Any, payloads: Any = None) -> None:
        raise NotImplementedError

    def search(self, *args: Any, **kwargs: Any) -> SearchResult:
        raise NotImplementedError

    # -- text convenience ----------------------------------------------------------------
    def add_texts(
        self,
        model: Any,
        ids: Sequence[int] | Sequence[str],
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any] | None] | None = None,
        *,
        store_text: bool = True,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> None:
        """Encode ``texts`` with a :class:`muvera.ColBERT` model and :meth:`add` them; the
        text is kept in each payload under ``"text"`` unless ``store_text=False``."""
        self._check_model(model)
        if payloads is not None and len(payloads) != len(texts):
            raise MuveraError(f"got {len(payloads)} payloads for {len(texts)} texts")
        tokens = model.encode_documents(texts, batch_size=batch_size, show_progress=show_progress)
        merged: list[dict[str, Any] | None] = []
        for i, text in enumerate(texts):
            base = json_payload(payloads[i], i) if payloads is not None else None
            merged.append({**(base or {}), "text": text} if store_text else base)
        self.add(ids, tokens, merged)

    def search_texts(
        self,
        model: Any,
        texts: Sequence[str],
        k: int = 10,
        candidates: int | None = None,
        *,
        rerank: bool = True,
        query_filter: Any = None,
    ) -> SearchResult:
        """Encode query ``texts`` with ``model`` and :meth:`search`; payloads included."""
        self._check_model(model)
        queries = model.encode_queries(texts)
        return self.search(
            queries, k, candidates, rerank=rerank, with_payloads=True, query_filter=query_filter
        )

    def _check_model(self, model: Any) -> None:
        dim = getattr(model, "dimension", None)
        if dim != self.token_dimension:
            raise MuveraError(
                f"the model gives {dim}-d token vectors; this index holds {self.token_dimension}-d"
            )
