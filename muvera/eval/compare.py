"""Exact MaxSim vs FDE-only vs FDE + re-rank, side by side, on one index and one query set.

:func:`compare_stages` runs every query one at a time through

* ``exact``: brute-force MaxSim over every stored document (:meth:`Index.search_exact`),
* ``fde``: the FDE top-``k`` alone (``rerank=False``),
* ``rerank@c``: the FDE top-``c`` re-ranked with exact MaxSim, for each ``c`` in
  ``candidates``,

and reports nDCG@10, recall@``recall_k``, the share of the exact top-10 that each stage
finds, and the latency per query (after the text encoding). The CLI's ``muvera eval`` and
``muvera demo`` print its table; the notebooks use it directly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import MuveraError
from .metrics import ndcg_at_k, recall_at_k

__all__ = ["StageComparison", "StageRow", "compare_stages"]


@dataclasses.dataclass(frozen=True)
class StageRow:
    """One retrieval stage's quality and latency (milliseconds per query)."""

    stage: str
    candidates: int | None
    ndcg_at_10: float
    recall: float
    exact_top10_found: float
    p50_ms: float
    p95_ms: float


@dataclasses.dataclass(frozen=True)
class StageComparison:
    """The rows of :func:`compare_stages`, ``exact`` first; ``recall_k`` names the recall."""

    rows: tuple[StageRow, ...]
    recall_k: int
    documents: int
    queries: int

    @property
    def exact(self) -> StageRow:
        return self.rows[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the rows plus each stage's nDCG@10 relative to exact MaxSim."""
        base = self.exact.ndcg_at_10
        return {
            "documents": self.documents,
            "queries": self.queries,
            "recall_k": self.recall_k,
            "rows": [
                {
                    **dataclasses.asdict(row),
                    "ndcg_vs_exact": row.ndcg_at_10 / base if base else None,
                    "speedup_vs_exact": self.exact.p50_ms / row.p50_ms if row.p50_ms else None,
                }
                for row in self.rows
            ],
        }

    def to_markdown(self) -> str:
        """A Markdown table (also readable as plain text)."""
        lines = [
            f"| stage | nDCG@10 | x exact | recall@{self.recall_k} | exact top-10 found "
            "| p50 ms | p95 ms | speed-up (p50) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in self.to_dict()["rows"]:
            ratio = "-" if row["ndcg_vs_exact"] is None else f"{row['ndcg_vs_exact']:.3f}"
            speed = "-" if row["speedup_vs_exact"] is None else f"{row['speedup_vs_exact']:.1f}x"
            lines.append(
                f"| {row['stage']} | {row['ndcg_at_10']:.3f} | {ratio} | {row['recall']:.3f} "
                f"| {row['exact_top10_found']:.1%} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} "
                f"| {speed} |"
            )
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Write a PNG: recall and the exact top-10 found versus the candidate count."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise MuveraError(
                "plotting needs matplotlib: pip install 'muvera-toolkit[plot]'"
            ) from None
        reranked = [r for r in self.rows if r.stage.startswith("rerank")]
        if not reranked:
            raise MuveraError("nothing to plot: the comparison has no re-ranked stage")
        xs = [r.candidates or 0 for r in reranked]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(xs, [r.exact_top10_found for r in reranked], "o-", label="exact top-10 found")
        ax.plot(xs, [r.recall for r in reranked], "s-", label=f"recall@{self.recall_k}")
        ax.axhline(self.exact.recall, color="grey", ls="--", label=f"exact recall@{self.recall_k}")
        ax.set_xscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.minorticks_off()
        ax.set_xlabel("FDE candidates re-ranked")
        ax.set_ylabel("fraction")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{self.documents:,} documents, {self.queries:,} queries")
        ax.legend(loc="lower right")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _run(ids: npt.NDArray[Any], scores: npt.NDArray[np.float32]) -> dict[str, float]:
    return {
        str(d): float(s) for d, s in zip(ids.tolist(), scores.tolist(), strict=True) if s > -np.inf
    }


def compare_stages(
    index: Any,
    queries: Sequence[npt.NDArray[np.float32]],
    query_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    candidates: Sequence[int] = (100, 200, 500),
    *,
    recall_k: int = 100,
) -> StageComparison:
    """Run ``queries`` (token matrices, ``query_ids[i]`` for ``queries[i]``) through exact
    MaxSim, FDE-only and FDE + re-rank on ``index`` (a :class:`muvera.Index`) and score the
    runs against ``qrels``. Candidate counts above the index size are clipped to it.

    Examples
    --------
    >>> import tempfile
    >>> from muvera import FDEConfig, Index
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.standard_normal((6, 8)).astype(np.float32) for _ in range(20)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     index = Index.create(tmp + "/ix", FDEConfig(dimension=8), store="exact")
    ...     index.add([str(i) for i in range(20)], docs)
    ...     report = compare_stages(index, [docs[3][:2]], ["q"], {"q": {"3": 1}}, [5, 10])
    ...     index.close()
    >>> [row.stage for row in report.rows]
    ['exact', 'fde', 'rerank@5', 'rerank@10']
    >>> report.exact.ndcg_at_10
    1.0
    """
    if len(queries) != len(query_ids):
        raise MuveraError(f"got {len(query_ids)} query ids for {len(queries)} queries")
    if not queries:
        raise MuveraError("compare_stages needs at least one query")
    n_docs = len(index)
    if n_docs == 0:
        raise MuveraError("the index is empty")
    counts = sorted({min(int(c), n_docs) for c in candidates})
    if any(c < 1 for c in counts):
        raise MuveraError(f"candidate counts must be positive, got {list(candidates)}")
    recall_k = min(recall_k, n_docs)
    qids = [str(q) for q in query_ids]
    exact_run, exact_top10, exact_lat = {}, [], []
    for qid, query in zip(qids, queries, strict=True):
        t0 = time.perf_counter()
        hits = index.search_exact([query], k=recall_k)
        exact_lat.append(time.perf_counter() - t0)
        exact_run[qid] = _run(hits.ids[0], hits.scores[0])
        exact_top10.append({str(d) for d in hits.ids[0][:10].tolist()})

    def row(stage: str, c: int | None, run: dict[str, dict[str, float]], found: list[float],
            lat: list[float]) -> StageRow:  # fmt: skip
        ms = 1000 * np.asarray(lat)
        return StageRow(
            stage=stage,
            candidates=c,
            ndcg_at_10=ndcg_at_k(run, qrels, 10),
            recall=recall_at_k(run, qrels, recall_k),
            exact_top10_found=float(np.mean(found)),
            p50_ms=float(np.percentile(ms, 50)),
            p95_ms=float(np.percentile(ms, 95)),
        )

    rows = [row("exact", None, exact_run, [1.0] * len(qids), exact_lat)]
    stages: list[tuple[str, int | None]] = [("fde", None)]
    stages += [(f"rerank@{c}", c) for c in counts]
    for stage, c in stages:
        run, found, lat = {}, [], []
        for i, (qid, query) in enumerate(zip(qids, queries, strict=True)):
            t0 = time.perf_counter()
            if c is None:
                hits = index.search([query], k=recall_k, candidates=recall_k, rerank=False)
            else:  # k = c: every candidate comes back, re-ranked, so the set is visible
                hits = index.search([query], k=c, candidates=c)
            lat.append(time.perf_counter() - t0)
            ids = hits.ids[0]
            scores = hits.scores[0]
            run[qid] = _run(ids[:recall_k], scores[:recall_k])
            top = exact_top10[i]
            found.append(len(top & {str(d) for d in ids.tolist()}) / max(len(top), 1))
        rows.append(row(stage, c, run, found, lat))
    return StageComparison(tuple(rows), recall_k, n_docs, len(qids))
