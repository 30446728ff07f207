"""Encode a BEIR dataset's corpus and test queries into token vectors, cached on disk.

The cache (``benchmarks/.cache/<dataset>-<model>.npz``, git-ignored) holds float16 token
matrices concatenated with their lengths and ids, so that the retrieval benchmarks can
rerun without re-encoding. Documents are ``title + " " + text``, as BEIR does.

``--split train`` encodes the queries of ``qrels/train.tsv`` instead (the corpus is shared, so
only queries are encoded and cached as ``<dataset>-<model>-train.npz``); ``--raw`` encodes
without L2 normalisation (``normalize=False``, cached as ``...-raw.npz``).

Usage: ``python benchmarks/encode_beir.py [--data ../shared/data/scifact] [--model ...]
[--split test|train] [--raw]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MUVERA_SHARED") or ROOT.parent / "shared")  # data and models
CACHE = ROOT / "benchmarks" / ".cache"


def cache_path(data: Path, model: Path, split: str = "test", raw: bool = False) -> Path:
    tail = ("" if split == "test" else f"-{split}") + ("-raw" if raw else "")
    return CACHE / f"{data.name}-{model.name}{tail}.npz"


def load_cached(
    data: Path, model: Path, split: str = "test", raw: bool = False
) -> dict[str, np.ndarray]:
    """The cached arrays; for a non-test split, its queries with the test cache's corpus."""
    with np.load(cache_path(data, model, split, raw), allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    if split != "test":
        out.update({k: v for k, v in load_cached(data, model, "test", raw).items()
                    if k.startswith("doc_")})  # fmt: skip
    return out


def split_tokens(tokens: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(tokens, np.cumsum(lengths)[:-1]) if len(lengths) else []


def encode(
    data: Path,
    model_dir: Path,
    batch_size: int,
    device: str,
    split: str = "test",
    raw: bool = False,
) -> Path:
    from muvera import ColBERT
    from muvera.eval import load_beir

    corpus, queries, _ = load_beir(data, split)
    model = ColBERT(model_dir, device=device, normalize=not raw)
    arrays: dict[str, np.ndarray] = {}
    t_docs = 0.0
    if split == "test":
        doc_ids = list(corpus)
        texts = [(corpus[d]["title"] + " " + corpus[d]["text"]).strip() for d in doc_ids]
        t0 = time.perf_counter()
        docs = model.encode_documents(
            texts, batch_size=batch_size, show_progress=sys.stderr.isatty()
        )
        t_docs = time.perf_counter() - t0
        arrays.update(
            doc_ids=np.array(doc_ids),
            doc_lengths=np.array([len(d) for d in docs], dtype=np.int64),
            doc_tokens=np.concatenate(docs).astype(np.float16),
        )
    query_ids = list(queries)
    qs = model.encode_queries([queries[q] for q in query_ids], batch_size=batch_size)
    out = cache_path(data, model_dir, split, raw)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        **arrays,
        query_ids=np.array(query_ids),
        query_lengths=np.array([len(q) for q in qs], dtype=np.int64),
        query_tokens=np.concatenate(qs).astype(np.float16),
        encode_seconds=np.array(t_docs),
    )
    tmp.replace(out)
    print(
        f"encoded {len(arrays.get('doc_ids', ()))} documents in {t_docs:.0f} s and "
        f"{len(qs)} queries -> {out}"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "scifact")
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "minilm-colbert-128")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--split", default="test", help="qrels split of the queries")
    parser.add_argument("--raw", action="store_true", help="no L2 normalisation")
    parser.add_argument("--force", action="store_true", help="re-encode even if cached")
    args = parser.parse_args()
    path = cache_path(args.data, args.model, args.split, args.raw)
    if path.is_file() and not args.force:
        print(f"cached: {path}")
        return
    if args.split != "test" and not cache_path(args.data, args.model, "test", args.raw).is_file():
        encode(args.data, args.model, args.batch_size, args.device, "test", args.raw)
    encode(args.data, args.model, args.batch_size, args.device, args.split, args.raw)


if __name__ == "__main__":
    main()
