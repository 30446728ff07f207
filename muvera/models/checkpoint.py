"""Reading model folders: Hub snapshots, JSON configs, weights, Dense layers (torch)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import MuveraError

__all__ = [
    "INSTALL_HINT",
    "DenseLayer",
    "activation",
    "import_torch",
    "load_dense",
    "load_state",
    "quiet_transformers",
    "read_json",
    "resolve_directory",
]

INSTALL_HINT = "install the 'models' extra: pip install 'muvera-toolkit[models]'"


@dataclasses.dataclass
class DenseLayer:
    weight: Any  # torch (out, in)
    bias: Any
    activation: Any
    residual: Any  # None, "identity" or a (out, in) weight


def import_torch() -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the environment
        raise MuveraError(f"muvera.ColBERT needs torch and transformers: {INSTALL_HINT}") from None
    return torch


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MuveraError(f"{path} is not valid JSON ({exc})") from None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load-time progress bars and warnings (no import-time effect)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def resolve_directory(name_or_path: str | os.PathLike[str], revision: str | None) -> Path:
    """A local model directory: the path itself, or a Hugging Face Hub snapshot."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or path.suffix
    if looks_like_path or (os.sep != "/" and os.sep in text):
        raise MuveraError(f"model directory {text!r} does not exist")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - comes with transformers
        raise MuveraError(
            f"{text!r} is not a local directory, and huggingface_hub is missing"
        ) from None
    try:
        return Path(snapshot_download(repo_id=text, revision=revision))
    except Exception as exc:  # offline, unknown id, gated repository, ...
        reason = (str(exc).splitlines() or [""])[0]
        raise MuveraError(
            f"model {text!r} is not a local directory and could not be fetched from the Hugging "
            f"Face Hub ({type(exc).__name__}: {reason}). Where the Hub is reachable, run "
            f"`huggingface-cli download {text} --local-dir DIR`, then pass the directory: "
            f"ColBERT('DIR')."
        ) from None


def activation(name: str | None, trust_remote_code: bool) -> Any:
    if not name or name in ("torch.nn.modules.linear.Identity", "torch.nn.Identity"):
        return None
    if not name.startswith("torch.") and not trust_remote_code:
        raise MuveraError(
            f"Dense activation {name!r} is not a torch module; load with trust_remote_code=True"
        )
    module_name, _, attr = name.rpartition(".")
    import importlib

    try:
        return getattr(importlib.import_module(module_name), attr)()
    except (ImportError, AttributeError) as exc:
        raise MuveraError(f"cannot build Dense activation {name!r} ({exc})") from None


def load_state(directory: Path, what: str) -> dict[str, Any]:
    torch = import_torch()
    safetensors_file = directory / "model.safetensors"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        return dict(load_file(str(safetensors_file)))
    bin_file = directory / "pytorch_model.bin"
    if bin_file.is_file():
        state = torch.load(str(bin_file), map_location="cpu", weights_only=True)
        return dict(state)
    raise MuveraError(f"{what}: no model.safetensors or pytorch_model.bin in {directory}")


def load_dense(directory: Path, trust_remote_code: bool) -> DenseLayer:
    config = read_json(directory / "config.json") if (directory / "config.json").is_file() else {}
    state = load_state(directory, f"Dense module {directory.name}")
    if "linear.weight" not in state:
        raise MuveraError(f"Dense module {directory} has no linear.weight")
    weight = state["linear.weight"].float()
    residual: Any = None
    if config.get("use_residual"):
        residual = state["residual.weight"].float() if "residual.weight" in state else "identity"
    return DenseLayer(
        weight=weight,
        bias=state["linear.bias"].float() if "linear.bias" in state else None,
        activation=activation(config.get("activation_function"), trust_remote_code),
        residual=residual,
    )
