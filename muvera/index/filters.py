"""Payload filters, the same for every store: Qdrant's JSON filter syntax, a subset.

A filter is a dict with any of ``must`` (every condition holds), ``should`` (at least one
holds) and ``must_not`` (none holds), each a list of conditions::

    {"key": "lang", "match": {"value": "en"}}          # equal (any element of a list)
    {"key": "lang", "match": {"any": ["en", "fr"]}}    # one of
    {"key": "lang", "match": {"except": ["de"]}}       # none of (the key must exist)
    {"key": "year", "range": {"gte": 2000, "lt": 2010}}  # numbers: gt, gte, lt, lte
    {"is_empty": {"key": "tags"}}                      # missing, null or []
    {"is_null": {"key": "tags"}}                       # present and null
    {"has_id": ["d1", "d7"]}                           # document ids
    {"must": [...], ...}                               # a nested filter

Keys may be dotted paths into nested dicts (``"meta.year"``); a list value matches when
one of its elements does, as in Qdrant. The local stores evaluate a filter over the
payloads into a mask of allowed documents (cached per filter and generation); the Qdrant
store turns it into Qdrant's own filter (ids into point ids).
"""

from __future__ import annotations

import json
import numbers
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import MuveraError

__all__ = ["allowed_mask", "check_filter", "to_point_filter"]

_CLAUSES = ("must", "should", "must_not")
_RANGE = ("gt", "gte", "lt", "lte")
_MISSING = object()


def check_filter(query_filter: Any, where: str = "query_filter") -> dict[str, Any]:
    """``query_filter`` if it is a well-formed filter dict, else a MuveraError naming the
    part that is not."""
    if not isinstance(query_filter, dict) or not query_filter:
        raise MuveraError(f"{where} must be a non-empty dict of {list(_CLAUSES)}")
    unknown = set(query_filter) - set(_CLAUSES)
    if unknown:
        raise MuveraError(f"{where}: unknown clause(s) {sorted(unknown)}; use {list(_CLAUSES)}")
    for clause in _CLAUSES:
        conditions = query_filter.get(clause, [])
        if not isinstance(conditions, list):
            raise MuveraError(f"{where}.{clause} must be a list of conditions")
        for i, condition in enumerate(conditions):
            _check_condition(condition, f"{where}.{clause}[{i}]")
    return query_filter


def _check_condition(c: Any, where: str) -> None:
    if not isinstance(c, dict):
        raise MuveraError(f"{where} must be a dict")
    if set(c) & set(_CLAUSES):
        check_filter(c, where)
        return
    if set(c) == {"has_id"}:
        if not isinstance(c["has_id"], list):
            raise MuveraError(f"{where}.has_id must be a list of document ids")
        return
    if set(c) in ({"is_empty"}, {"is_null"}):
        inner = next(iter(c.values()))
        if not isinstance(inner, dict) or not isinstance(inner.get("key"), str):
            raise MuveraError(f"{where} must be {{'{next(iter(c))}': {{'key': ...}}}}")
        return
    if not isinstance(c.get("key"), str) or not c["key"]:
        raise MuveraError(f"{where} needs a 'key' (a payload field), 'has_id' or a nested filter")
    kind = set(c) - {"key"}
    if kind == {"match"}:
        match = c["match"]
        if not isinstance(match, dict) or len(match) != 1 or next(iter(match)) not in (
            "value", "any", "except",
        ):  # fmt: skip
            raise MuveraError(f"{where}.match must be {{'value': v}}, {{'any': [..]}} or "
                              "{'except': [..]}")  # fmt: skip
        value = next(iter(match.values()))
        if ("value" in match) == isinstance(value, (list, dict)):
            raise MuveraError(f"{where}.match: 'value' takes a scalar, 'any'/'except' a list")
        return
    if kind == {"range"}:
        bounds = c["range"]
        if (
            not isinstance(bounds, dict)
            or not bounds
            or set(bounds) - set(_RANGE)
            or not all(_is_number(v) for v in bounds.values())
        ):
            raise MuveraError(f"{where}.range must map some of {list(_RANGE)} to numbers")
        return
    raise MuveraError(f"{where}: a condition is 'match' or 'range' on a key, got {sorted(kind)}")


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(float(v))


def _values(payload: Any, key: str) -> list[Any]:
    """The values at dotted ``key`` (a list value gives its elements); [] when missing."""
    node = payload
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return [_MISSING]
        node = node[part]
    return list(node) if isinstance(node, list) else [node]


def _holds(c: dict[str, Any], payload: Any, doc_id: Any) -> bool:
    if set(c) & set(_CLAUSES):
        return _passes(c, payload, doc_id)
    if "has_id" in c:
        return doc_id in c["has_id"]
    if "is_empty" in c:
        values = _values(payload, c["is_empty"]["key"])
        return all(v is _MISSING or v is None for v in values) or values == []
    if "is_null" in c:
        return _values(payload, c["is_null"]["key"]) == [None]
    values = [v for v in _values(payload, c["key"]) if v is not _MISSING]
    if "range" in c:
        r = c["range"]
        return any(
            _is_number(v)
            and ("gt" not in r or v > r["gt"])
            and ("gte" not in r or v >= r["gte"])
            and ("lt" not in r or v < r["lt"])
            and ("lte" not in r or v <= r["lte"])
            for v in values
        )
    match = c["match"]
    if "value" in match:
        return any(_same(v, match["value"]) for v in values)
    if "any" in match:
        return any(_same(v, w) for v in values for w in match["any"])
    return bool(values) and not any(_same(v, w) for v in values for w in match["except"])


def _same(a: Any, b: Any) -> bool:
    return (type(a) is type(b) and a == b) or (_is_number(a) and _is_number(b) and a == b)


def _passes(f: dict[str, Any], payload: Any, doc_id: Any) -> bool:
    must, should, must_not = (f.get(k, []) for k in _CLAUSES)
    return (
        all(_holds(c, payload, doc_id) for c in must)
        and (not should or any(_holds(c, payload, doc_id) for c in should))
        and not any(_holds(c, payload, doc_id) for c in must_not)
    )


def allowed_mask(
    query_filter: dict[str, Any],
    label_ids: list[Any],
    payloads: list[Any],
    alive: npt.NDArray[np.bool_],
) -> npt.NDArray[np.bool_]:
    """bool ``(labels,)``: live documents whose payload (and id) pass ``query_filter``."""
    mask = np.zeros(alive.shape, dtype=bool)
    for label in np.flatnonzero(alive).tolist():
        mask[label] = _passes(query_filter, payloads[label], label_ids[label])
    return mask


def to_point_filter(query_filter: dict[str, Any], id_to_label: dict[Any, int]) -> dict[str, Any]:
    """The filter with document ids (``has_id``) turned into point ids (labels), for a
    store that filters by itself (Qdrant reads the result as its JSON filter)."""

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"has_id"}:
                return {"has_id": [id_to_label[i] for i in node["has_id"] if i in id_to_label]}
            return {k: convert(v) for k, v in node.items()}
        if isinstance(node, list):
            return [convert(x) for x in node]
        return node

    converted: dict[str, Any] = convert(query_filter)
    return converted


def filter_key(query_filter: dict[str, Any]) -> str:
    """A cache key for ``query_filter`` (canonical JSON)."""
    return json.dumps(query_filter, sort_keys=True, default=str)
