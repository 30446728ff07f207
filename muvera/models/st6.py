"""The sentence-transformers 6 ``MultiVectorEncoder`` layout.

``modules.json`` lists a Transformer (the folder itself, or a sub-folder), optional Dense
projections, a ``MultiVectorMask`` and optionally a ``Normalize`` module. There are no
[Q]/[D] prefixes; ``query_length``, ``document_length`` and ``query_expansion``
(``strategy`` "fixed" or "min", ``attend``, ``token``, ``length``) live in the Transformer's
``sentence_bert_config.json``; the skiplist (``skiplist_words``, ``skiplist_tasks``) in the
mask module's ``config.json``; prompts in ``config_sentence_transformers.json``. Texts are
not stripped before the prompt is prepended. :func:`tokenize` reproduces
``Transformer.preprocess`` + ``MultiVectorMask.forward`` of sentence-transformers 6.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MuveraError
from .checkpoint import read_json
from .tokenizer import batch_encode

__all__ = ["EXTRA", "LAYOUT", "expansion_id", "skiplist_ids", "st6_defaults", "tokenize"]

LAYOUT = "sentence-transformers"
EXTRA = ("skiplist_tasks", "expansion_strategy", "expansion_token", "expansion_length")
_EXPANSION_KEYS = {"strategy", "attend", "token", "length"}


def st6_defaults(mask_dir: Path, sbert: dict[str, Any], max_positions: int) -> dict[str, Any]:
    """Settings of a MultiVectorEncoder folder (its mask module's folder and the
    Transformer's ``sentence_bert_config.json``), checked."""
    where = mask_dir / "config.json"
    mask = read_json(where) if where.is_file() else {}
    if not isinstance(mask, dict):
        raise MuveraError(f"{where} must hold a JSON object")
    if mask.get("keep_only_token_ids"):
        raise MuveraError(
            f"{where}: keep_only_token_ids (image-patch models such as ColPali) is not "
            "supported: muvera.ColBERT encodes text"
        )
    words = mask.get("skiplist_words") or []
    tasks = mask.get("skiplist_tasks", ["document"])
    tasks = [tasks] if isinstance(tasks, str) else tasks
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise MuveraError(f"{where}: skiplist_words must be a list of strings")
    if not isinstance(tasks, list) or not set(tasks) <= {"query", "document"}:
        raise MuveraError(f"{where}: skiplist_tasks must list 'query' and/or 'document'")
    expansion = sbert.get("query_expansion")
    values: dict[str, Any] = {
        "query_prefix": "",
        "document_prefix": "",
        "query_length": sbert.get("query_length") or max_positions,
        "document_length": sbert.get("document_length") or max_positions,
        "do_query_expansion": expansion is not None,
        "attend_to_expansion_tokens": False,
        "skiplist_words": list(words),
        "skiplist_tasks": tuple(tasks),
        "expansion_strategy": "fixed",
        "expansion_token": None,
        "expansion_length": 0,
    }
    if expansion is not None:
        if not isinstance(expansion, dict) or set(expansion) - _EXPANSION_KEYS:
            raise MuveraError(
                f"sentence_bert_config.json: query_expansion must be an object with keys "
                f"{sorted(_EXPANSION_KEYS)}, got {expansion!r}"
            )
        strategy, length = expansion.get("strategy"), expansion.get("length")
        attend, token = expansion.get("attend", False), expansion.get("token")
        if strategy not in ("fixed", "min") or not isinstance(attend, bool):
            raise MuveraError(f"sentence_bert_config.json: bad query_expansion {expansion!r}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise MuveraError("sentence_bert_config.json: query_expansion needs a positive length")
        if token is not None and not isinstance(token, str):
            raise MuveraError("sentence_bert_config.json: query_expansion token must be a string")
        values.update(attend_to_expansion_tokens=attend, expansion_strategy=strategy,
                      expansion_token=token, expansion_length=length)  # fmt: skip
    return values


def skiplist_ids(tokenizer: Any, words: tuple[str, ...]) -> list[int]:
    """Token ids of the skiplist; words that are not single tokens are dropped (as
    sentence-transformers does, so that real [UNK] tokens stay scored)."""
    unk_id, unk = getattr(tokenizer, "unk_token_id", None), getattr(tokenizer, "unk_token", None)
    ids: list[int] = []
    for word in words:
        token_id = tokenizer.convert_tokens_to_ids(word)
        if token_id is None or (token_id == unk_id and word != unk):
            continue
        ids.append(int(token_id))
    return sorted(set(ids))


def expansion_id(tokenizer: Any, token: str | None) -> int | None:
    """The id expansion positions take: the configured token, else [MASK], else EOS."""
    if token is not None:
        return int(tokenizer.convert_tokens_to_ids(token))
    for candidate in (tokenizer.mask_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return None


def tokenize(model: Any, texts: list[str], is_query: bool, prompt: str) -> dict[str, Any]:
    """Features as ``Transformer.preprocess(task=...)`` builds them, plus ``scoring_mask``
    (``MultiVectorMask.forward``): the positions whose vectors are kept."""
    import torch

    s = model.settings
    prepared = [prompt + t for t in texts]
    if model.do_lower_case:
        prepared = [t.lower() for t in prepared]
    expand = is_query and s.do_query_expansion
    floor = s.expansion_length
    if not expand:
        length, pad = (s.query_length if is_query else s.document_length), False
    elif s.expansion_strategy == "fixed":
        length, pad = floor, True
    else:
        length, pad = max(s.query_length, floor), False
    encoded = batch_encode(model.tokenizer, model._backends, prepared, length, pad)
    keys = ("input_ids", "attention_mask", "token_type_ids")
    features: dict[str, Any] = {k: encoded[k] for k in keys if k in encoded}
    ids, mask = features["input_ids"], features["attention_mask"]
    scoring = mask.bool()
    if expand:
        if ids.shape[1] < floor:
            missing = floor - ids.shape[1]
            for key in features:
                features[key] = torch.nn.functional.pad(features[key], (0, missing), value=0)
            ids, mask = features["input_ids"], features["attention_mask"]
        positions = (mask == 0) & (torch.arange(ids.shape[1]) < floor)
        if model.expansion_id is not None:
            features["input_ids"] = ids.masked_fill(positions, model.expansion_id)
        if s.attend_to_expansion_tokens:
            features["attention_mask"] = mask.masked_fill(positions, 1)
        scoring = features["attention_mask"].bool() | positions
    if ("query" if is_query else "document") in s.skiplist_tasks and model.skiplist_ids:
        skip = torch.tensor(model.skiplist_ids, dtype=torch.long)
        scoring = scoring & ~torch.isin(features["input_ids"], skip)
    features["scoring_mask"] = scoring
    return features
