"""The PyLate (sentence-transformers) layout: ``modules.json`` lists a Transformer, then
Dense projections (``1_Dense/``, ``2_Dense/``, ...); ``config_sentence_transformers.json``
holds the query/document prefixes, lengths, [MASK] query expansion, attention to the
expansion tokens, the skiplist and prompts. Missing fields take PyLate's defaults."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from ..errors import MuveraError
from .checkpoint import read_json

__all__ = [
    "PYLATE_DEFAULTS",
    "PYLATE_FIELDS",
    "expansion_token_id",
    "pylate_defaults",
    "read_modules",
    "side_prompts",
]

PYLATE_DEFAULTS: dict[str, Any] = {
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 32,
    "document_length": 180,
    "do_query_expansion": True,
    "attend_to_expansion_tokens": False,
    "skiplist_words": list(string.punctuation),
}
PYLATE_FIELDS = tuple(PYLATE_DEFAULTS)


def pylate_defaults(st_config: dict[str, Any]) -> dict[str, Any]:
    """The settings a PyLate checkpoint's config gives (PyLate's defaults for the rest)."""
    return {f: st_config.get(f, PYLATE_DEFAULTS[f]) for f in PYLATE_FIELDS}


def expansion_token_id(tokenizer: Any, needed: bool) -> int:
    """PyLate's query expansion token: [MASK], else EOS, else pad (a MuveraError when the
    model expands queries and the tokenizer has none of them)."""
    for token_id in (tokenizer.mask_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
        if token_id is not None:
            return int(token_id)
    if needed:
        raise MuveraError("query expansion needs a [MASK], EOS or pad token in the tokenizer")
    return 0


def side_prompts(st_config: dict[str, Any], where: Path) -> tuple[dict[str, str], str, str, str]:
    """``(prompts, query prompt, document prompt, default prompt)`` of a config: per side as
    sentence-transformers' ``encode_query`` / ``encode_document`` pick them (the "query"
    prompt; the first of "document", "passage", "corpus"; else the default prompt), and the
    ``default_prompt_name``'s alone (``""`` without one), which PyLate's ``encode`` uses."""
    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise MuveraError(f"{where}: 'prompts' must map names to strings")
    default = st_config.get("default_prompt_name")
    if default and default not in prompts:
        raise MuveraError(f"{where}: default_prompt_name {default!r} is not one of its "
                          f"prompts {sorted(prompts)}")  # fmt: skip
    fallback: str = prompts[default] if default else ""
    document = next((prompts[n] for n in ("document", "passage", "corpus") if n in prompts),
                    fallback)  # fmt: skip
    return dict(prompts), prompts.get("query", fallback), document, fallback


def read_modules(directory: Path) -> dict[str, Any]:
    """The Transformer folder, the Dense folders in order, the MultiVectorMask folder (None
    if there is none) and whether a Normalize module follows, from ``modules.json`` (none:
    the folder itself is the transformer)."""
    path = directory / "modules.json"
    if not path.is_file():
        return {"transformer": "", "dense": [], "mask": None, "normalize": False}
    modules = read_json(path)
    if not isinstance(modules, list):
        raise MuveraError(f"{path} must hold a list of modules")
    transformer, mask, normalize = None, None, False
    dense: list[str] = []
    for module in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind = str(module.get("type", ""))
        if kind.endswith("Transformer") and transformer is None:
            transformer = module.get("path", "")
        elif kind.endswith("Dense"):
            dense.append(module.get("path", ""))
        elif kind.endswith("MultiVectorMask"):
            mask = module.get("path", "")
        elif kind.endswith("Normalize"):
            normalize = True
    if transformer is None:
        raise MuveraError(f"{path} lists no Transformer module")
    return {"transformer": transformer, "dense": dense, "mask": mask, "normalize": normalize}
