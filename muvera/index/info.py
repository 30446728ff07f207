"""What an index holds, as one JSON-able dict (``muvera info``, the server's ``/stats``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..stores.cell_file import DEFAULT_COUNT, SCAN_TOKENS, min_fit_tokens

__all__ = ["describe"]


def describe(index: Any) -> dict[str, Any]:
    """Documents, ids, generation and format, model, FDE config, store parameters, token
    dtype, checksums, files and sizes of an open :class:`muvera.Index`."""
    manifest = index.manifest
    files = {
        p.name: p.stat().st_size
        for p in sorted(Path(index.path).iterdir())
        if p.is_file() and not p.name.startswith(".")
    }
    total = sum(files.values())
    meta = index.metadata
    entry = dict(manifest["store"].get("entry") or {})
    for key in ("deleted", "payloads", "capacity", "unmarked"):
        entry.pop(key, None)
    segments = entry.get("segments")
    if isinstance(segments, list):  # hnswlib graph segments: how many, how many rows
        rows = sum(s.get("count", 0) for s in segments if isinstance(s, dict))
        entry["segments"] = {"files": len(segments), "rows": rows}
    return {
        "path": str(index.path),
        "documents": len(index),
        "labels": index.records.next_label,
        "id_type": index.records.id_type,
        "generation": manifest["generation"],
        "format_version": manifest["format_version"],
        "library_version": manifest.get("library_version"),
        "model": meta.get("model"),
        "fde": index.encoder.config.to_dict(),
        "fde_dimension": index.encoder.output_dimension,
        "store": manifest["store"]["kind"],
        "store_parameters": {**(manifest["store"].get("options") or {}), **entry},
        "token_dtype": (manifest.get("tokens") or {}).get("dtype"),
        "calibration": index.calibration,
        "token_cells": _cells(manifest),
        "default_candidates": index.default_candidates,
        "checksums": "checksums" in manifest,
        "files": files,
        "bytes": total,
        "bytes_per_document": total / len(index) if len(index) else None,
    }


def _cells(manifest: dict[str, Any]) -> str:
    """What the token section says of the token cells, in words."""
    cells = (manifest.get("tokens") or {}).get("cells")
    if cells is None:
        return "off"
    if not cells or set(cells) == {"count"}:
        count = cells.get("count", DEFAULT_COUNT)
        return (
            f"on, not fitted yet ({count:,} cells, fitted once the index holds "
            f"{min_fit_tokens(count):,} tokens)"
        )
    rows = int(cells.get("bytes", 0)) // 2  # one uint16 code per token row
    mode = (
        f"every live document scored (<= {SCAN_TOKENS:,} token rows)" if rows <= SCAN_TOKENS
        else f"FDE top + probed cells' postings (> {SCAN_TOKENS:,} token rows)"
    )  # fmt: skip
    residual = (manifest.get("tokens") or {}).get("residual_from")
    stored = "" if residual is None else f"; token rows from {residual:,} on are residuals"
    return f"{cells.get('coarse')} x {cells.get('fine')} cells; {mode}{stored}"
