"""Text to multi-vectors: ColBERT-family checkpoints run with transformers + torch.

:class:`ColBERT` reads the checkpoint layouts users arrive with and reproduces what the
model's own library computes, without depending on PyLate or sentence-transformers:

* **PyLate** (sentence-transformers layout): ``modules.json`` lists a Transformer, then
  Dense projections (``1_Dense/``, ``2_Dense/``, ...); ``config_sentence_transformers.json``
  holds the query/document prefixes, lengths, [MASK] query expansion, attention to the
  expansion tokens, the skiplist and prompts. Missing fields take PyLate's defaults.
* **Stanford ColBERT**: ``config.json`` with ``HF_ColBERT``, the projection as
  ``linear.weight`` inside the main checkpoint, settings in ``artifact.metadata``.
* **sentence-transformers 6** ``MultiVectorEncoder`` (a ``MultiVectorMask`` module): see
  :mod:`.st6`.
* **Plain encoders** (no Dense): token states as they are, no prefix, expansion, skiplist.

PyLate's rules, reproduced: the prefix token goes right after [CLS] (texts are stripped and
tokenized to ``length - 1`` first); queries with expansion are padded with [MASK] to
``query_length`` and every position is kept (attended to only if configured); documents
are truncated to ``document_length`` and padding and skiplist tokens are dropped; token
vectors are L2-normalised unless ``normalize=False``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import MuveraError
from . import st6
from .checkpoint import (
    INSTALL_HINT,
    import_torch,
    load_dense,
    quiet_transformers,
    read_json,
    resolve_directory,
)
from .plain import plain_defaults
from .pooling import pool_tokens
from .pylate import (
    PYLATE_FIELDS,
    expansion_token_id,
    pylate_defaults,
    read_modules,
    side_prompts,
)
from .stanford import stanford_layout
from .tokenizer import batch_encode, check_texts, progress_callback

__all__ = ["ColBERT", "ColBERTSettings"]


@dataclasses.dataclass(frozen=True)
class ColBERTSettings:
    """How a :class:`ColBERT` turns text into tokens (resolved from the checkpoint).

    ``layout`` is "pylate", "sentence-transformers", "stanford" or "plain";
    ``query_prompt`` / ``document_prompt`` are prepended to the text.
    """

    layout: str
    query_prefix: str
    document_prefix: str
    query_length: int
    document_length: int
    do_query_expansion: bool
    attend_to_expansion_tokens: bool
    skiplist_words: tuple[str, ...]
    query_prompt: str = ""
    document_prompt: str = ""
    skiplist_tasks: tuple[str, ...] = ("document",)
    expansion_strategy: str = "fixed"
    expansion_token: str | None = None
    expansion_length: int = 0  # sentence-transformers 6 only (PyLate: query_length)


class ColBERT:
    """A late-interaction text encoder: texts in, one ``(n_tokens, dim)`` matrix per text out.

    Parameters
    ----------
    name_or_path : str or path
        A local model directory, or a Hugging Face Hub id (downloaded when the Hub is
        reachable; offline, a clear error says how to point at a local directory).
    device : str, optional
        "cpu", "cuda", "cuda:1", ... Default: CUDA when available, else CPU.
    trust_remote_code : bool, default False
        Allow custom architectures shipped with the checkpoint (e.g. NeuML's BertHash).
    dtype : {"float32", "float16", "bfloat16"}, default "float32"
        Weights and activations dtype; half precision needs a GPU. Outputs are float32.
    normalize : bool, optional
        L2-normalise every token vector. Default: the model's own (a sentence-transformers 6
        model: whether it has a Normalize module; every other layout: True, PyLate's).
    batch_size : int, default 32
        Texts per forward pass (texts are sorted by length into batches).
    revision : str, optional
        Hub revision when ``name_or_path`` is a Hub id.
    query_prefix, document_prefix, query_length, document_length, do_query_expansion,
    attend_to_expansion_tokens, skiplist_words : optional
        Override what the checkpoint's configuration says.

    Examples
    --------
    >>> model = ColBERT("path/to/colbert-model")  # doctest: +SKIP
    >>> docs = model.encode_documents(["Multi-vectors, one vector."])  # doctest: +SKIP
    >>> docs[0].shape  # doctest: +SKIP
    (9, 128)
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike[str],
        device: str | None = None,
        trust_remote_code: bool = False,
        *,
        dtype: str = "float32",
        normalize: bool | None = None,
        batch_size: int = 32,
        revision: str | None = None,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        query_length: int | None = None,
        document_length: int | None = None,
        do_query_expansion: bool | None = None,
        attend_to_expansion_tokens: bool | None = None,
        skiplist_words: Sequence[str] | None = None,
    ) -> None:
        torch = import_torch()
        try:
            import transformers
        except ImportError:  # pragma: no cover - depends on the environment
            raise MuveraError(f"muvera.ColBERT needs transformers: {INSTALL_HINT}") from None
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise MuveraError(f"batch_size must be a positive int, got {batch_size!r}")
        dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if dtype not in dtypes:
            raise MuveraError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype == "float16" and self.device.type == "cpu":
            raise MuveraError(
                "dtype='float16' needs a GPU device; use 'bfloat16' or 'float32' on CPU"
            )
        self.batch_size = batch_size
        self.directory = resolve_directory(name_or_path, revision)
        self.name = str(name_or_path)

        modules = read_modules(self.directory)
        transformer_dir = self.directory / modules["transformer"]
        st_config_path = self.directory / "config_sentence_transformers.json"
        st_config = read_json(st_config_path) if st_config_path.is_file() else {}
        sbert_path = transformer_dir / "sentence_bert_config.json"
        sbert = read_json(sbert_path) if sbert_path.is_file() else {}
        config_path = transformer_dir / "config.json"
        if not config_path.is_file():
            raise MuveraError(f"{transformer_dir} has no config.json: not a transformers model")
        hf_config = read_json(config_path)
        architectures = hf_config.get("architectures") or []
        stanford = bool(architectures) and architectures[0] == "HF_ColBERT"

        try:
            with quiet_transformers():
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                    str(transformer_dir), trust_remote_code=trust_remote_code
                )
                self._backends: dict[tuple[int, bool], Any] = {}
                self.model = transformers.AutoModel.from_pretrained(
                    str(transformer_dir), trust_remote_code=trust_remote_code
                )
        except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ...
            reason = (str(exc).splitlines() or [""])[0]
            hint = ""
            if "auto_map" in hf_config and not trust_remote_code:
                hint = " It ships its own architecture code: load it with trust_remote_code=True."
            raise MuveraError(
                f"could not load the model in {transformer_dir} "
                f"({type(exc).__name__}: {reason}).{hint}"
            ) from None
        self.do_lower_case = bool(sbert.get("do_lower_case", False))
        self.dense = [load_dense(self.directory / p, trust_remote_code) for p in modules["dense"]]
        if modules["mask"] is not None:
            layout = st6.LAYOUT
            defaults = st6.st6_defaults(self.directory / modules["mask"], sbert,
                                        self._max_positions())  # fmt: skip
        elif stanford:
            layout = "stanford"
            self.dense, defaults = stanford_layout(self.directory, transformer_dir)
        elif self.dense or any(f in st_config for f in PYLATE_FIELDS):
            layout = "pylate"
            defaults = pylate_defaults(st_config)
        else:
            layout = "plain"
            defaults = plain_defaults(int(sbert.get("max_seq_length") or self._max_positions()))
        overrides = {
            "query_prefix": query_prefix,
            "document_prefix": document_prefix,
            "query_length": query_length,
            "document_length": document_length,
            "do_query_expansion": do_query_expansion,
            "attend_to_expansion_tokens": attend_to_expansion_tokens,
            "skiplist_words": None if skiplist_words is None else list(skiplist_words),
        }
        values: dict[str, Any] = {
            k: (v if v is not None else defaults[k]) for k, v in overrides.items()
        }
        own = modules["normalize"] if layout == st6.LAYOUT else True  # the model's own choice
        self.normalize = bool(own if normalize is None else normalize)
        if not values["do_query_expansion"]:
            values["attend_to_expansion_tokens"] = False  # as PyLate: nothing to attend to
        self.prompts, query_prompt, document_prompt, self._default_prompt = side_prompts(
            st_config, st_config_path)  # fmt: skip
        self.settings = ColBERTSettings(
            layout=layout,
            query_prefix=str(values["query_prefix"]),
            document_prefix=str(values["document_prefix"]),
            query_length=self._check_length("query_length", values["query_length"]),
            document_length=self._check_length("document_length", values["document_length"]),
            do_query_expansion=bool(values["do_query_expansion"]),
            attend_to_expansion_tokens=bool(values["attend_to_expansion_tokens"]),
            skiplist_words=tuple(values["skiplist_words"]),
            query_prompt=query_prompt,
            document_prompt=document_prompt,
            **{k: defaults[k] for k in st6.EXTRA if k in defaults},
        )
        self.query_prefix_id = self._prefix_id("query_prefix", self.settings.query_prefix)
        self.document_prefix_id = self._prefix_id("document_prefix", self.settings.document_prefix)
        self.expansion_id: int | None = expansion_token_id(
            self.tokenizer, self.settings.do_query_expansion)  # fmt: skip
        skip_ids: Any = self.tokenizer.convert_tokens_to_ids(list(self.settings.skiplist_words))
        self.skiplist_ids = sorted({int(i) for i in skip_ids})
        if layout == st6.LAYOUT:
            self.expansion_id = st6.expansion_id(self.tokenizer, self.settings.expansion_token)
            self.skiplist_ids = st6.skiplist_ids(self.tokenizer, self.settings.skiplist_words)
        self.model.to(device=self.device, dtype=dtypes[dtype]).eval()
        self._dtype = dtypes[dtype]
        for layer in self.dense:
            for name in ("weight", "bias", "residual"):
                value = getattr(layer, name)
                if isinstance(value, torch.Tensor):
                    setattr(layer, name, value.to(device=self.device, dtype=self._dtype))
            if layer.activation is not None:
                layer.activation.to(self.device)

    # -- loading helpers -----------------------------------------------------------------
    def _max_positions(self) -> int:
        config = self.model.config
        limits = [getattr(config, "max_position_embeddings", None), self.tokenizer.model_max_length]
        usable = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
        return min(usable) if usable else 512

    def _check_length(self, name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise MuveraError(f"{name} must be an int >= 2, got {value!r}")
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and value > limit:
            raise MuveraError(f"{name}={value} exceeds the model's {limit} positions")
        return value

    def _prefix_id(self, name: str, prefix: str) -> int | None:
        if not prefix:
            return None
        token_id: Any = self.tokenizer.convert_tokens_to_ids(prefix)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise MuveraError(
                f"{name} {prefix!r} is not a token of this model's tokenizer (a model trained "
                f"with it has it in its vocabulary); pass {name}='' to encode without one"
            )
        return int(token_id)

    # -- public API ----------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        """Size of each output token vector."""
        if self.dense:
            return int(self.dense[-1].weight.shape[0])
        return int(self.model.config.hidden_size)

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"ColBERT({self.name!r}, layout={s.layout!r}, dimension={self.dimension}, "
            f"device={str(self.device)!r})"
        )

    def encode_queries(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
        as_tensors: bool = False,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize: bool | None = None,
    ) -> list[Any]:
        """Token vectors of each query: a list of float32 ``(n_tokens_i, dimension)`` arrays
        (torch tensors on the model's device with ``as_tensors=True``), in input order.

        With query expansion every query has exactly ``query_length`` tokens. The query
        prompt of the model's config is prepended (``settings.query_prompt``);
        ``prompt_name`` picks another of its ``prompts``, ``prompt`` gives the text itself
        (``""``: none). ``normalize`` overrides the model's setting for this call.
        """
        return self._encode(texts, True, batch_size, show_progress, as_tensors,
                            self._prompt(True, prompt_name, prompt), normalize)  # fmt: skip

    def encode_documents(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
        as_tensors: bool = False,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize: bool | None = None,
        pool_factor: float = 1,
        protected_tokens: int = 1,
    ) -> list[Any]:
        """Token vectors of each document (padding and skiplist tokens dropped), with the
        document prompt (``settings.document_prompt``); see :meth:`encode_queries` for the
        return type and the options. ``pool_factor`` > 1: :mod:`muvera.models.pooling`."""
        pool, device = pool_factor != 1, self.device if as_tensors else None
        out = self._encode(texts, False, batch_size, show_progress, as_tensors and not pool,
                           self._prompt(False, prompt_name, prompt), normalize)  # fmt: skip
        return pool_tokens(out, pool_factor, protected_tokens, device) if pool else out

    def encode(
        self,
        texts: Sequence[str],
        *,
        is_query: bool = True,
        batch_size: int | None = None,
        show_progress_bar: bool = False,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize_embeddings: bool | None = None,
        pool_factor: float = 1,
        protected_tokens: int = 1,
    ) -> list[Any]:
        """PyLate's ``encode(sentences, is_query=..., pool_factor=...)``, as PyLate 1.6 computes
        it (so PyLate code ports by changing the import): unlike :meth:`encode_queries` /
        :meth:`encode_documents`, no side prompt unless asked (``default_prompt_name``'s only)."""
        if prompt is None and prompt_name is None:
            prompt = self._default_prompt
        options: dict[str, Any] = dict(batch_size=batch_size, show_progress=show_progress_bar,
                                       prompt_name=prompt_name, prompt=prompt,
                                       normalize=normalize_embeddings)  # fmt: skip
        if is_query:  # (PyLate pools documents only)
            return self.encode_queries(texts, **options)
        return self.encode_documents(texts, pool_factor=pool_factor,
                                     protected_tokens=protected_tokens, **options)  # fmt: skip

    def _prompt(self, is_query: bool, prompt_name: str | None, prompt: str | None) -> str:
        """The prompt a call prepends: ``prompt``, else the config's ``prompt_name``, else
        the side's default."""
        if prompt is not None and prompt_name is not None:
            raise MuveraError("give prompt or prompt_name, not both")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise MuveraError(f"prompt must be a string, got {type(prompt).__name__}")
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise MuveraError(
                    f"prompt_name {prompt_name!r} is not one of this model's prompts "
                    f"{sorted(self.prompts)}"
                )
            return self.prompts[prompt_name]
        return self.settings.query_prompt if is_query else self.settings.document_prompt

    # -- encoding ------------------------------------------------------------------------
    def tokenize(
        self, texts: Sequence[str], is_query: bool, prompt: str | None = None
    ) -> dict[str, Any]:
        """Input ids, attention mask (and token types) exactly as PyLate builds them
        (``prompt``: the side's default prompt when None)."""
        torch = import_torch()
        s = self.settings
        if prompt is None:
            prompt = s.query_prompt if is_query else s.document_prompt
        if s.layout == st6.LAYOUT:
            return st6.tokenize(self, list(texts), is_query, prompt)
        length = s.query_length if is_query else s.document_length
        prefix_id = self.query_prefix_id if is_query else self.document_prefix_id
        prepared = [(prompt + t).strip() for t in texts]
        if self.do_lower_case:
            prepared = [t.lower() for t in prepared]
        max_length = length - 1 if prefix_id is not None else length
        expand = is_query and s.do_query_expansion
        encoded = batch_encode(self.tokenizer, self._backends, prepared, max_length, expand)
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        if expand:
            ids = torch.where(mask.bool(), ids, torch.full_like(ids, self.expansion_id))
        features = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in encoded:
            features["token_type_ids"] = encoded["token_type_ids"]
        if prefix_id is not None:
            for key, value in (
                ("input_ids", prefix_id),
                ("attention_mask", 1),
                ("token_type_ids", 0),
            ):
                if key in features:
                    t = features[key]
                    column = torch.full((t.shape[0], 1), value, dtype=t.dtype)
                    features[key] = torch.cat([t[:, :1], column, t[:, 1:]], dim=1)
        if expand and s.attend_to_expansion_tokens:
            features["attention_mask"] = torch.ones_like(features["attention_mask"])
        return features

    def _forward(self, features: dict[str, Any]) -> Any:
        torch = import_torch()
        inputs = {k: v.to(self.device) for k, v in features.items()}
        hidden = self.model(**inputs).last_hidden_state
        for layer in self.dense:
            out = torch.nn.functional.linear(hidden, layer.weight, layer.bias)
            if layer.activation is not None:
                out = layer.activation(out)
            if layer.residual is not None:
                out = out + (
                    hidden if isinstance(layer.residual, str) else hidden @ layer.residual.T
                )
            hidden = out
        return hidden

    def _encode(
        self,
        texts: Any,
        is_query: bool,
        batch_size: int | None,
        show_progress: bool,
        as_tensors: bool,
        prompt: str | None = None,
        normalize: bool | None = None,
    ) -> list[Any]:
        torch = import_torch()
        what = "encode_queries" if is_query else "encode_documents"
        normalize = self.normalize if normalize is None else bool(normalize)
        items = check_texts(texts, what)
        size = batch_size if batch_size is not None else self.batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise MuveraError(f"batch_size must be a positive int, got {size!r}")
        order = sorted(range(len(items)), key=lambda i: -len(items[i]))
        results: list[Any] = [None] * len(items)
        skip = torch.tensor(self.skiplist_ids, dtype=torch.long) if self.skiplist_ids else None
        batches = range(0, len(items), size)
        progress = progress_callback(len(items), what) if show_progress else None
        with torch.inference_mode():
            for start in batches:
                idx = order[start : start + size]
                features = self.tokenize([items[i] for i in idx], is_query, prompt)
                keep = features.pop("scoring_mask", None)  # sentence-transformers 6
                vectors = self._forward(features).float()
                if keep is None and is_query and self.settings.do_query_expansion:
                    keep = torch.ones_like(features["input_ids"], dtype=torch.bool)
                elif keep is None:
                    keep = features["attention_mask"].bool()
                    if not is_query and skip is not None:
                        keep &= ~torch.isin(features["input_ids"], skip)
                if normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
                # One selection and one device-to-host copy per batch (a per-text mask on a
                # GPU would synchronise once per text); the counts come from the CPU mask.
                counts = keep.sum(dim=1).tolist()
                kept = vectors[keep.to(self.device)]
                if as_tensors:
                    parts: Sequence[Any] = torch.split(kept, counts)
                else:
                    flat = kept.cpu().numpy().astype(np.float32, copy=False)
                    parts = np.split(flat, np.cumsum(counts)[:-1])
                for i, tokens in zip(idx, parts, strict=True):
                    results[i] = tokens
                if progress is not None:
                    progress(len(idx))
        return results
