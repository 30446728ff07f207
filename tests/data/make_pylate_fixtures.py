"""Write tests/data/pylate-1.6: tiny random-weight models saved (or loaded) by PyLate itself,
with PyLate's own outputs, for tests/test_pylate_parity.py.

Run with PyLate installed (a separate virtual environment: PyLate pins its own torch):
``python tests/data/make_pylate_fixtures.py``. Families: a BERT model with one Dense layer
(PyLate's defaults), one with query/document prompts, a ModernBERT model (byte-level BPE
tokenizer) with two Dense layers, a Stanford ColBERT checkpoint and a model with custom
architecture code (``trust_remote_code``). For each: queries and documents (edge cases
included), normalised and not, with the side prompts, and documents pooled with
``pool_factor=2``, as ``expected.npz`` (tokens concatenated, lengths).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from model_fixtures import custom_model, stanford_model, write_tokenizer  # noqa: E402

OUT = HERE / "pylate-1.6"
QUERIES = ["hello world", "  the cat sat on the mat.  ", "", "one\ntwo three",
           " ".join(["dog"] * 30)]  # fmt: skip
DOCUMENTS = ["the dog ran in the park, fast!", "", "   ", "line one\nline two",
             " ".join(["the cat sat on the mat."] * 12)]  # fmt: skip
# (PyLate 1.6's pooling fails on near-identical tokens, "negative distances": distinct texts)
POOLED = ["the dog ran in the park, fast!", "hello world", "one two three four five six",
          "a cat sat on the mat and the dog ran in the park with muvera vectors"]  # fmt: skip


def tiny_bert(directory: Path, seed: int) -> None:
    from transformers import BertConfig, BertModel

    tokenizer = write_tokenizer(directory, prefixes=())
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64)  # fmt: skip
    BertModel(config).eval().save_pretrained(directory)


def tiny_modernbert(directory: Path, seed: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import ModernBertConfig, ModernBertModel, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    core = Tokenizer(models.BPE(unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.BpeTrainer(vocab_size=160, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    core.train_from_iterator(QUERIES + DOCUMENTS + ["query document muvera vectors"], trainer)
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", core.token_to_id("[CLS]")), ("[SEP]", core.token_to_id("[SEP]"))],
    )  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]",
                                        pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                        mask_token="[MASK]", model_max_length=64)  # fmt: skip
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = ModernBertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=2,
                              max_position_embeddings=64, global_attn_every_n_layers=1,
                              local_attention=16, pad_token_id=tokenizer.pad_token_id,
                              cls_token_id=tokenizer.cls_token_id,
                              sep_token_id=tokenizer.sep_token_id)  # fmt: skip
    ModernBertModel(config).eval().save_pretrained(directory)


def portable_config(directory: Path) -> None:
    """transformers 5.3 writes ModernBERT's rope parameters with top-level null keys that
    later versions refuse; the per-attention-type entries alone mean the same to both."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    rope = config.get("rope_parameters") or {}
    config["rope_parameters"] = {k: v for k, v in rope.items() if isinstance(v, dict)}
    path.write_text(json.dumps(config, indent=2) + "\n")


def encode_all(model, name: str, path: Path) -> None:
    arrays = {}
    for side, texts in (("queries", QUERIES), ("documents", DOCUMENTS)):
        for norm in (True, False):
            out = model.encode(texts, is_query=side == "queries", normalize_embeddings=norm,
                               convert_to_numpy=True, batch_size=2)  # fmt: skip
            key = f"{side}_{'norm' if norm else 'raw'}"
            arrays[key] = np.concatenate([np.asarray(o, np.float32) for o in out])
            arrays[key + "_lengths"] = np.array([len(o) for o in out], np.int64)
    for side, texts, prompt_name in (("queries", QUERIES, "query"),
                                     ("documents", DOCUMENTS, "document")):  # fmt: skip
        if prompt_name in model.prompts:
            out = model.encode(texts, is_query=side == "queries", prompt_name=prompt_name,
                               convert_to_numpy=True, batch_size=2)  # fmt: skip
            arrays[f"{side}_prompted"] = np.concatenate([np.asarray(o, np.float32) for o in out])
            arrays[f"{side}_prompted_lengths"] = np.array([len(o) for o in out], np.int64)
    try:
        out = model.encode(POOLED, is_query=False, pool_factor=2, convert_to_numpy=True,
                           batch_size=2)  # fmt: skip
    except ValueError as exc:  # PyLate's Ward linkage on unclamped distances (see POOLED)
        print(f"{name}: PyLate cannot pool these documents ({exc})")
    else:
        arrays["documents_pooled"] = np.concatenate([np.asarray(o, np.float32) for o in out])
        arrays["documents_pooled_lengths"] = np.array([len(o) for o in out], np.int64)
    np.savez(path / "expected.npz", **arrays)
    print(name, {k: v.shape for k, v in arrays.items() if k.endswith("lengths")})


def main() -> None:
    import pylate
    from pylate import models
    from sentence_transformers.models import Transformer

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    base = OUT / ".base"
    specs = {}

    tiny_bert(base / "bert", 1)
    model = models.ColBERT(str(base / "bert"), embedding_size=8, query_length=16,
                           document_length=24, device="cpu")  # fmt: skip
    specs["bert-1dense"] = (model, {})

    model = models.ColBERT(str(base / "bert"), embedding_size=8, query_length=16,
                           document_length=24, device="cpu",
                           prompts={"query": "query: ", "document": "document: "})  # fmt: skip
    specs["bert-prompts"] = (model, {})

    tiny_modernbert(base / "modernbert", 2)
    transformer = Transformer(str(base / "modernbert"), max_seq_length=64)
    first = models.Dense(32, 16, bias=True, activation_function=torch.nn.Tanh())
    second = models.Dense(16, 8, bias=False, activation_function=torch.nn.Identity())
    model = models.ColBERT(modules=[transformer, first, second], query_length=20,
                           document_length=32, device="cpu")  # fmt: skip
    specs["modernbert-2dense"] = (model, {})

    for name, (model, _) in specs.items():
        path = OUT / name
        model.save(str(path / "model"))
        if name.startswith("modernbert"):
            portable_config(path / "model")
        reloaded = models.ColBERT(str(path / "model"), device="cpu")
        encode_all(reloaded, name, path)

    stanford_model(OUT / "stanford" / "model")
    encode_all(models.ColBERT(str(OUT / "stanford" / "model"), device="cpu"), "stanford",
               OUT / "stanford")  # fmt: skip
    custom_model(OUT / "custom-code" / "model")
    custom = models.ColBERT(str(OUT / "custom-code" / "model"), device="cpu",
                            trust_remote_code=True)  # fmt: skip
    encode_all(custom, "custom-code", OUT / "custom-code")
    shutil.rmtree(base)
    for readme in OUT.rglob("README.md"):
        readme.unlink()
    (OUT / "texts.json").write_text(json.dumps({"queries": QUERIES, "documents": DOCUMENTS,
                                                 "pooled": POOLED}, indent=1) + "\n")  # fmt: skip
    (OUT / "versions.json").write_text(json.dumps({"pylate": pylate.__version__,
                                                   "torch": torch.__version__}) + "\n")  # fmt: skip
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
