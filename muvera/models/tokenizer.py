"""Tokenization as transformers does it, fast, and an opt-in progress callback."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import MuveraError

__all__ = ["batch_encode", "check_texts", "progress_callback", "progress_lines"]

_TOKENIZER_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def check_texts(texts: Any, what: str) -> list[str]:
    """``texts`` as a list, if it is a sequence of strings (else a MuveraError)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise MuveraError(f"{what} takes a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise MuveraError(f"{what}: item {i} is {type(text).__name__}, not str")
    return list(texts)


def batch_encode(
    tokenizer: Any,
    backends: dict[tuple[int, bool], Any],
    texts: list[str],
    max_length: int,
    pad_to_max: bool,
) -> dict[str, Any]:
    """``tokenizer(texts, padding, truncation="longest_first", max_length)`` as int64
    torch tensors.

    With a fast tokenizer this calls its Rust backend directly, configured exactly as
    transformers configures it: transformers' own Python conversion of the encodings
    costs several times the tokenization itself (3 of 3.8 s for SciFact on a GPU).
    """
    import torch

    backend = backends.get((max_length, pad_to_max))
    if backend is None and getattr(tokenizer, "is_fast", False):
        tok = tokenizer
        backend = type(tok.backend_tokenizer).from_str(tok.backend_tokenizer.to_str())
        backend.enable_truncation(max_length=max_length, strategy="longest_first")
        backend.enable_padding(
            direction=tok.padding_side,
            pad_id=tok.pad_token_id,
            pad_type_id=tok.pad_token_type_id,
            pad_token=tok.pad_token,
            length=max_length if pad_to_max else None,
        )
        backends[(max_length, pad_to_max)] = backend  # configured once per shape
    if backend is None:  # a slow (pure Python) tokenizer
        encoded = tokenizer(
            texts,
            padding="max_length" if pad_to_max else True,
            truncation="longest_first",
            max_length=max_length,
            return_tensors="pt",
        )
        return {k: v for k, v in encoded.items() if k in _TOKENIZER_KEYS}
    encodings = backend.encode_batch(texts)
    out = {
        "input_ids": [e.ids for e in encodings],
        "attention_mask": [e.attention_mask for e in encodings],
    }
    if "token_type_ids" in tokenizer.model_input_names:
        out["token_type_ids"] = [e.type_ids for e in encodings]
    return {k: torch.from_numpy(np.array(v, dtype=np.int64)) for k, v in out.items()}


PROGRESS_INTERVAL = 10.0  # seconds between progress lines when stderr is not a terminal


def progress_lines(total: int, what: str, interval: float = PROGRESS_INTERVAL) -> Any:
    """A progress callback printing a line on stderr every ``interval`` seconds (and at
    the end): done/total, rate, time left. For logs and pipes, where a bar is noise."""
    state = {"done": 0, "start": time.monotonic(), "last": time.monotonic()}

    def update(n: int) -> None:
        state["done"] += n
        now = time.monotonic()
        done = state["done"]
        if done < total and now - state["last"] < interval:
            return
        state["last"] = now
        rate = done / max(now - state["start"], 1e-9)
        left = (total - done) / rate if rate > 0 else float("inf")
        print(
            f"{what}: {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%), "
            f"{rate:,.1f}/s, {left:,.0f} s left",
            file=sys.stderr,
            flush=True,
        )

    return update


def progress_callback(total: int, what: str) -> Any:
    """An opt-in progress callback: a tqdm bar on a terminal, else lines at a steady
    interval (:func:`progress_lines`)."""
    if not sys.stderr.isatty():
        return progress_lines(total, what)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with transformers
        done = [0]

        def update(n: int) -> None:
            done[0] += n
            print(
                f"\r{what}: {done[0]}/{total}", end="" if done[0] < total else "\n", file=sys.stderr
            )

        return update
    bar = tqdm(total=total, desc=what, unit="text")

    def update_bar(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()

    return update_bar
