"""Tiny random-weight checkpoints in every layout muvera.ColBERT reads, written on the fly."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "a",
    "dog",
    "ran",
    "in",
    "park",
    "hello",
    "world",
    "query",
    "document",
    "muvera",
    "fast",
    "vectors",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "##s",
    "##ing",
    "##ed",
]
HIDDEN = 32


def write_tokenizer(directory: Path, prefixes=("[Q] ", "[D] ")) -> PreTrainedTokenizerFast:
    """A lower-casing BERT WordPiece tokenizer over a tiny vocabulary, built with `tokenizers`."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]"]
    vocab += list(string.punctuation) + WORDS
    core = Tokenizer(WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    core.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["[unused0]", "[unused1]"]})
    if prefixes:
        tokenizer.add_tokens(list(prefixes))
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def write_bert(directory: Path, vocab_size: int, seed: int, architectures=None) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    model = BertModel(config).eval()
    model.save_pretrained(str(directory))
    if architectures:
        cfg = json.loads((directory / "config.json").read_text())
        cfg["architectures"] = architectures
        (directory / "config.json").write_text(json.dumps(cfg))
    return model


def write_dense(
    directory: Path,
    in_f: int,
    out_f: int,
    seed: int,
    bias=False,
    activation="torch.nn.modules.linear.Identity",
) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    state = {"linear.weight": torch.randn(out_f, in_f, generator=g) / in_f**0.5}
    if bias:
        state["linear.bias"] = torch.randn(out_f, generator=g)
    save_file(state, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(
        json.dumps(
            {
                "in_features": in_f,
                "out_features": out_f,
                "bias": bias,
                "activation_function": activation,
                "use_residual": False,
            }
        )
    )
    return state


def modules_json(directory: Path, dense_paths, extra=()) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
    ]
    for i, p in enumerate(dense_paths, 1):
        modules.append({"idx": i, "name": str(i), "path": p, "type": "pylate.models.Dense.Dense"})
    for j, (p, kind) in enumerate(extra, len(modules)):
        modules.append({"idx": j, "name": str(j), "path": p, "type": kind})
    (directory / "modules.json").write_text(json.dumps(modules))


def pylate_model(
    directory: Path, n_dense: int = 1, config: dict | None = None, seed: int = 0
) -> dict:
    """PyLate layout; returns the Dense state dicts (first to last)."""
    tokenizer = write_tokenizer(directory)
    write_bert(directory, len(tokenizer), seed)
    states = []
    if n_dense >= 1:
        states.append(
            write_dense(
                directory / "1_Dense",
                HIDDEN,
                24,
                seed + 1,
                bias=n_dense > 1,
                activation="torch.nn.modules.activation.Tanh"
                if n_dense > 1
                else "torch.nn.modules.linear.Identity",
            )
        )
    if n_dense >= 2:
        states.append(write_dense(directory / "2_Dense", 24, 16, seed + 2))
    modules_json(directory, [f"{i}_Dense" for i in range(1, n_dense + 1)])
    settings = (
        {
            "query_prefix": "[Q] ",
            "document_prefix": "[D] ",
            "query_length": 12,
            "document_length": 20,
            "do_query_expansion": True,
            "attend_to_expansion_tokens": False,
            "skiplist_words": list(string.punctuation),
            "prompts": {"query": "", "document": ""},
            "default_prompt_name": None,
        }
        if config is None
        else config
    )
    (directory / "config_sentence_transformers.json").write_text(json.dumps(settings))
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 256, "do_lower_case": False})
    )
    return {"states": states}


def plain_model(directory: Path, sentence_transformers: bool, seed: int = 5) -> None:
    tokenizer = write_tokenizer(directory, prefixes=())
    write_bert(directory, len(tokenizer), seed)
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24}))
    if sentence_transformers:
        (directory / "1_Pooling").mkdir()
        (directory / "1_Pooling" / "config.json").write_text(
            json.dumps({"pooling_mode_mean_tokens": True})
        )
        modules_json(
            directory,
            [],
            extra=[
                ("1_Pooling", "sentence_transformers.models.Pooling"),
                ("2_Normalize", "sentence_transformers.models.Normalize"),
            ],
        )


def stanford_model(directory: Path, seed: int = 9) -> torch.Tensor:
    tokenizer = write_tokenizer(directory, prefixes=())
    model = write_bert(directory, len(tokenizer), seed, architectures=["HF_ColBERT"])
    state = {f"bert.{k}": v.contiguous() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    linear = torch.randn(16, HIDDEN, generator=g) / HIDDEN**0.5
    state["linear.weight"] = linear
    save_file(state, str(directory / "model.safetensors"))
    (directory / "artifact.metadata").write_text(
        json.dumps(
            {
                "query_token_id": "[unused0]",
                "doc_token_id": "[unused1]",
                "query_maxlen": 10,
                "doc_maxlen": 16,
                "attend_to_mask_tokens": False,
            }
        )
    )
    return linear


CUSTOM_CONFIG = """
from transformers import BertConfig


class TinyHashConfig(BertConfig):
    model_type = "tiny-hash-bert"
"""

CUSTOM_MODEL = '''
import torch
from transformers import BertModel

from .configuration_tinyhash import TinyHashConfig


class TinyHashModel(BertModel):
    """A custom architecture: BERT whose outputs are scaled by 2 (so a plain BERT differs)."""

    config_class = TinyHashConfig

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.last_hidden_state = out.last_hidden_state * 2.0
        return out
'''


def custom_model(directory: Path, seed: int = 11) -> None:
    """A checkpoint whose architecture ships as code in the directory (needs trust_remote_code)."""
    pylate_model(directory, n_dense=1, seed=seed)
    (directory / "configuration_tinyhash.py").write_text(CUSTOM_CONFIG)
    (directory / "modeling_tinyhash.py").write_text(CUSTOM_MODEL)
    cfg = json.loads((directory / "config.json").read_text())
    cfg["model_type"] = "tiny-hash-bert"
    cfg["architectures"] = ["TinyHashModel"]
    cfg["auto_map"] = {
        "AutoConfig": "configuration_tinyhash.TinyHashConfig",
        "AutoModel": "modeling_tinyhash.TinyHashModel",
    }
    (directory / "config.json").write_text(json.dumps(cfg))
