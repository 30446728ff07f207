"""The Stanford ColBERT layout: ``config.json`` with ``HF_ColBERT``, the projection as
``linear.weight`` inside the main checkpoint, settings in ``artifact.metadata``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MuveraError
from .checkpoint import DenseLayer, load_state, read_json
from .pylate import PYLATE_DEFAULTS

__all__ = ["stanford_layout"]


def stanford_layout(
    directory: Path, transformer_dir: Path
) -> tuple[list[DenseLayer], dict[str, Any]]:
    """The projection (``linear.weight`` in the main checkpoint) and the settings of
    ``artifact.metadata``."""
    state = load_state(transformer_dir, "Stanford ColBERT checkpoint")
    if "linear.weight" not in state:
        raise MuveraError(f"Stanford ColBERT checkpoint in {transformer_dir} has no linear.weight")
    dense = [DenseLayer(state["linear.weight"].float(), None, None, None)]
    defaults = dict(PYLATE_DEFAULTS, query_prefix="[unused0]", document_prefix="[unused1]")
    meta_path = directory / "artifact.metadata"
    if meta_path.is_file():
        meta = read_json(meta_path)
        for src, dst in (
            ("query_token_id", "query_prefix"),
            ("doc_token_id", "document_prefix"),
            ("query_maxlen", "query_length"),
            ("doc_maxlen", "document_length"),
            ("attend_to_mask_tokens", "attend_to_expansion_tokens"),
        ):
            if meta.get(src) is not None:
                defaults[dst] = meta[src]
    return dense, defaults
