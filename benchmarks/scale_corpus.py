"""A text-like scale corpus: 10^5-10^6 documents resampled from real encoded documents.

The planted clouds of ``bench_scale.py`` have no neighbourhoods: every document is equally
far from every other, which flatters an ANN graph and says nothing about text. Here every
token comes from the shared MiniLM-128 model's encodings of SciFact and msmarco-mini (the
``encode_beir.py`` caches, 10,183 documents, ~1.9M tokens), so token vectors follow the
model's real distribution, and documents share topics the way text does:

* document ``j`` (drawn from ``numpy.random.default_rng([seed, j])``, so any one can be
  re-derived alone) takes the length of a random source document and is filled with spans
  of 1-16 consecutive source tokens (mean ~6): 70% from its *primary* source document,
  20% from one of the primary's 10 nearest source documents (cosine of mean tokens: its
  topic), 10% from anywhere;
* every token gets isotropic Gaussian noise of norm ~``noise`` (default 0.3; the tokens
  are unit vectors) and is renormalised, so no two documents are copies.

Queries are the model's real query encodings (SciFact test + train, msmarco-mini), as
they are: a real query distribution, with relevance defined by brute-force exact MaxSim
over the synthetic corpus (``Index.search_exact``), which ``bench_scale_text.py`` caches.

>>> corpus = TextLikeCorpus.from_cache()  # doctest: +SKIP
>>> docs = corpus.documents(0, 3)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from encode_beir import SHARED, cache_path, encode, load_cached  # noqa: E402

__all__ = ["TextLikeCorpus"]

MODEL = SHARED / "models" / "minilm-colbert-128"
DATASETS = ("scifact", "msmarco-mini")
NEIGHBOURS = 10
SHARES = (0.7, 0.2, 0.1)  # primary source, a topical neighbour, anywhere


class TextLikeCorpus:
    """Documents resampled from real token vectors (see the module docstring)."""

    def __init__(
        self,
        tokens: npt.NDArray[np.float16],
        lengths: npt.NDArray[np.int64],
        queries: list[npt.NDArray[np.float32]],
        seed: int = 0,
        noise: float = 0.3,
    ) -> None:
        self.tokens = tokens
        self.lengths = lengths.astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.real_queries = queries
        self.seed = seed
        self.noise = noise
        self.dimension = int(tokens.shape[1])
        means = np.add.reduceat(tokens.astype(np.float32), self.offsets, axis=0)
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        self.neighbours = np.empty((len(self.lengths), NEIGHBOURS), np.int64)
        for start in range(0, len(means), 2048):  # nearest source documents by mean token
            sims = means[start : start + 2048] @ means.T
            np.put_along_axis(sims, np.arange(start, start + len(sims))[:, None], -np.inf, 1)
            self.neighbours[start : start + 2048] = np.argpartition(-sims, NEIGHBOURS, 1)[
                :, :NEIGHBOURS
            ]

    @classmethod
    def from_cache(cls, seed: int = 0, noise: float = 0.3) -> TextLikeCorpus:
        """The corpus over the shared model's cached encodings (encoded first when absent)."""
        tokens, lengths, queries = [], [], []
        for name in DATASETS:
            data = SHARED / "data" / name
            if not data.is_dir():  # else the cached test split alone: other queries
                raise SystemExit(f"{data} is missing: the corpus and its queries come from it")
            splits = ("test", "train") if (data / "qrels" / "train.tsv").is_file() else ("test",)
            for split in splits:
                if not cache_path(data, MODEL, split).is_file():
                    encode(data, MODEL, 16, "cpu", split, False)
                z = load_cached(data, MODEL, split)
                if split == "test":
                    tokens.append(z["doc_tokens"].astype(np.float16))
                    lengths.append(z["doc_lengths"])
                q_off = np.concatenate([[0], np.cumsum(z["query_lengths"])])
                queries += [
                    z["query_tokens"][a:b].astype(np.float32) for a, b in itertools.pairwise(q_off)
                ]
        return cls(np.concatenate(tokens), np.concatenate(lengths), queries, seed, noise)

    def documents(self, start: int, stop: int) -> list[npt.NDArray[np.float16]]:
        """Documents ``start .. stop`` (unit float16 rows), each from its own generator."""
        return [self._document(j) for j in range(start, stop)]

    def _document(self, j: int) -> npt.NDArray[np.float16]:
        rng = np.random.default_rng([self.seed, j])
        n_src = len(self.lengths)
        primary = int(rng.integers(n_src))
        n = int(self.lengths[int(rng.integers(n_src))])
        spans = rng.integers(1, 17, size=n)  # more spans than needed; the total is cut at n
        picks = rng.choice(3, size=n, p=SHARES)
        neighbour = self.neighbours[primary, rng.integers(NEIGHBOURS, size=n)]
        anywhere = rng.integers(n_src, size=n)
        source = np.where(picks == 0, primary, np.where(picks == 1, neighbour, anywhere))
        ends = np.cumsum(spans)
        used = int(np.searchsorted(ends, n)) + 1
        spans, source = spans[:used], source[:used]
        spans[-1] -= int(ends[used - 1]) - n  # the last span ends at n tokens
        src_len = self.lengths[source]
        spans = np.minimum(spans, src_len)
        first = (rng.random(used) * (src_len - spans + 1)).astype(np.int64)
        starts = self.offsets[source] + first
        rows = np.repeat(starts - np.cumsum(spans) + spans, spans) + np.arange(int(spans.sum()))
        x = self.tokens[rows].astype(np.float32)
        x += (self.noise / np.sqrt(self.dimension)) * rng.standard_normal(x.shape, np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float16)

    def queries(self, n: int) -> list[npt.NDArray[np.float32]]:
        """``n`` real query encodings, a fixed sample (the same for every corpus size)."""
        rng = np.random.default_rng([self.seed, 10**9])
        pick = rng.choice(
            len(self.real_queries), size=min(n, len(self.real_queries)), replace=False
        )
        return [self.real_queries[int(i)] for i in pick]
