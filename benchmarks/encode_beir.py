"""Encode a BEIR dataset's corpus and test queries into token vectors, cached on disk.

The cache (``benchmarks/.cache/<dataset>-<model>.npz``, git-ignored) holds float16 token
matrices concatenated with their lengths and ids, so that the retrieval benchmarks can
rerun without re-encoding. Documents are ``title + " " + text``, as BEIR does.

Usage: ``python benchmarks/encode_beir.py [--data ../shared/data/scifact] [--model ...]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CACHE = ROOT / "benchmarks" / ".cache"


def cache_path(data: Path, model: Path) -> Path:
    return CACHE / f"{data.name}-{model.name}.npz"


def load_cached(data: Path, model: Path) -> dict[str, np.ndarray]:
    with np.load(cache_path(data, model), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def split_tokens(tokens: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(tokens, np.cumsum(lengths)[:-1]) if len(lengths) else []


def encode(data: Path, model_dir: Path, batch_size: int, device: str) -> Path:
    from muvera import ColBERT
    from muvera.eval import load_beir

    corpus, queries, _ = load_beir(data)
    doc_ids = list(corpus)
    texts = [(corpus[d]["title"] + " " + corpus[d]["text"]).strip() for d in doc_ids]
    query_ids = list(queries)
    model = ColBERT(model_dir, device=device)
    t0 = time.perf_counter()
    docs = model.encode_documents(texts, batch_size=batch_size, show_progress=sys.stderr.isatty())
    t_docs = time.perf_counter() - t0
    qs = model.encode_queries([queries[q] for q in query_ids], batch_size=batch_size)
    out = cache_path(data, model_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        doc_ids=np.array(doc_ids),
        doc_lengths=np.array([len(d) for d in docs], dtype=np.int64),
        doc_tokens=np.concatenate(docs).astype(np.float16),
        query_ids=np.array(query_ids),
        query_lengths=np.array([len(q) for q in qs], dtype=np.int64),
        query_tokens=np.concatenate(qs).astype(np.float16),
        encode_seconds=np.array(t_docs),
    )
    tmp.replace(out)
    print(f"encoded {len(docs)} documents in {t_docs:.0f} s and {len(qs)} queries -> {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "scifact")
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "minilm-colbert-128")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--force", action="store_true", help="re-encode even if cached")
    args = parser.parse_args()
    if cache_path(args.data, args.model).is_file() and not args.force:
        print(f"cached: {cache_path(args.data, args.model)}")
        return
    encode(args.data, args.model, args.batch_size, args.device)


if __name__ == "__main__":
    main()
