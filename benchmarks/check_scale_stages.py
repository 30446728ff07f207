"""Where the wide mode loses the exact top-10, stage by stage, on a kept index of
``bench_scale_text.py --keep`` (documents 0 .. n-1 of the text-like corpus, token cells
fitted, more than ``SCAN_TOKENS`` token rows).

Per query of the fixed sample (the cached float16 brute-force top-10 as truth, or
``--truth-file``), the share of its exact top-10 that each stage of the first stage still
holds, for ``candidates`` = n:

* ``fde pool``: the FDE graph's top ``WIDE x n``;
* ``reached``: documents with a token in one of the ``N_PROBE`` best cells of some query
  token (what probing can reach at all); ``probe kept``: the best ``PROBE_DOCS x n`` of
  them by PLAID's pruned centroid interaction (the probe's rough score);
* ``pool``: the union the cells rank (the share a float16 re-rank of the whole pool finds);
* ``cells top m``: the pool's best m by approximate MaxSim over the cell centroids
  (m = n is what today's search re-ranks exactly);
* ``ceiling top m`` (``--ceiling Q``, the first Q queries): every document ranked by the
  cells, the share of the truth in its top m (is the centroid score the limit, or the pool?);
* ``search``: what ``Index.search(candidates=n)`` finds, with its p50 and the stage
  timings it reports.

Each stage's milliseconds (cell table, FDE graph, probe, cell scores) are timed alone.
Results go to ``--out`` as JSON and a table is printed.

Usage: ``python benchmarks/check_scale_stages.py INDEX [--queries 100] [--candidates
100,200,400] [--probes 2,4] [--ceiling 20] [--truth-file own.npy] [--out stages.json]``
(``--probes`` / ``--probe-docs``: the stage shares again with these ``N_PROBE`` /
``PROBE_DOCS``; the search row keeps the defaults; ``--markdown FILE`` prints the table
of a results file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scale_text import ground_truth  # noqa: E402
from machine import describe, machine  # noqa: E402
from scale_corpus import TextLikeCorpus  # noqa: E402

from muvera import Index  # noqa: E402
from muvera.cells import cell_scores  # noqa: E402
from muvera.postings import probe  # noqa: E402
from muvera.stores import cell_file, local  # noqa: E402

TOPS = (1, 2, 4, 8)  # cells top m = n x these


def _share(ids: np.ndarray, truth: np.ndarray) -> float:
    return len(set(ids.tolist()) & set(truth.tolist())) / len(truth)


def stages(index: Index, q: np.ndarray, n: int, n_probe: int, docs: int, truth: np.ndarray) -> dict:
    """The stage shares and milliseconds of one query at ``candidates`` = n, ``n_probe``
    cells probed per query token and the best ``docs x n`` reached documents kept."""
    store = index.store
    tcells = store.cells
    t0 = time.perf_counter()
    table = tcells.cells.table(q)
    t1 = time.perf_counter()
    qf = index.encoder.encode_queries([q])
    labels, _ = store._candidates(qf, local.WIDE * n, False, None)
    fde = labels[0][labels[0] >= 0]
    t2 = time.perf_counter()
    lists = tcells.postings(store.offsets, store.lengths, store._live)
    reached, rough = probe(table, q.shape[0], lists, n_probe, store.offsets.size)
    want = min(docs * n, reached.size)
    kept = reached[np.argpartition(-rough, want - 1)[:want]] if want else reached[:0]
    pool = np.union1d(fde, kept)
    t3 = time.perf_counter()
    scores = cell_scores(table, tcells.code_rows(), store.offsets[pool], store.lengths[pool])
    t4 = time.perf_counter()
    ranked = pool[np.argsort(-scores, kind="stable")]
    row = {
        "fde pool": _share(fde, truth), "reached": _share(reached, truth),
        "probe kept": _share(kept, truth), "pool": _share(pool, truth),
        **{f"cells top {t}n": _share(ranked[: t * n], truth) for t in TOPS},
        "ms": {"table": 1e3 * (t1 - t0), "fde": 1e3 * (t2 - t1), "probe": 1e3 * (t3 - t2),
               "cell scores": 1e3 * (t4 - t3)},
        "pool size": int(pool.size), "reached size": int(reached.size),
    }  # fmt: skip
    return row


def ceiling(index: Index, q: np.ndarray, n: int, truth: np.ndarray) -> dict:
    """Every live document ranked by the cells: the truth's share in the top n x TOPS."""
    store = index.store
    tcells = store.cells
    table = tcells.cells.table(q)
    live = np.flatnonzero(store._live)
    scores = cell_scores(table, tcells.code_rows(), store.offsets[live], store.lengths[live])
    top = live[np.argpartition(-scores, TOPS[-1] * n)[: TOPS[-1] * n]]
    top = top[np.argsort(-scores[np.searchsorted(live, top)], kind="stable")]
    return {f"ceiling top {t}n": _share(top[: t * n], truth) for t in TOPS}


def markdown(result: dict[str, Any]) -> str:
    """The stage table of a results file."""
    names = {
        "fde pool": "FDE pool",
        "reached": "reached",
        "probe kept": "probe kept",
        "pool": "pool",
        **{f"cells top {t}n": f"cells top {t}n" for t in TOPS},
        "search": "search",
        **{f"ceiling top {t}n": f"every doc top {t}n" for t in TOPS},
    }
    s = result["settings"]
    lines = [
        f"{describe(result['machine'])}; {result['documents']:,} documents, "
        f"{result['queries']} queries; WIDE {s['WIDE']}, FDE_PART {s['FDE_PART']}. Share of "
        "the exact top-10 held by each stage; ms: medians of the stages timed alone (cell "
        "table / FDE graph / probe / cell scores), and search's p50 (its first pass over "
        "the index: the token file may be read from disk).",
        "",
        "| candidates | N_PROBE | PROBE_DOCS | " + " | ".join(names.values())
        + " | pool size | stage ms | search p50 ms |",
        "| ---: " * (len(names) + 6) + "|",
    ]  # fmt: skip
    for r in result["rows"]:
        cols = " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in names)
        ms = " / ".join(f"{v:.1f}" for v in r["ms"].values())
        p50 = f"{r['search p50 ms']:.1f}" if "search p50 ms" in r else "-"
        lines.append(f"| {r['candidates']} | {r['n_probe']} | {r['probe_docs']} | {cols} "
                     f"| {r['pool size']:.0f} | {ms} | {p50} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path, nargs="?")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--candidates", default="100,200,400")
    parser.add_argument("--probes", default="", help="N_PROBE values to try besides default")
    parser.add_argument("--probe-docs", default="", help="PROBE_DOCS values to try too")
    parser.add_argument("--ceiling", type=int, default=0, help="queries ranked in full")
    parser.add_argument("--truth-file", type=Path, help="top-10 ids per query (.npy)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--markdown", type=Path, help="print the table of a results file")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    if args.index is None:
        parser.error("the index folder is required")
    corpus = TextLikeCorpus.from_cache()
    queries = corpus.queries(args.queries)
    index = Index.open(args.index, mode="r")
    n_docs = len(index)
    truth = np.load(args.truth_file) if args.truth_file else ground_truth(
        corpus, n_docs, queries)  # fmt: skip
    queries = queries[: len(truth)]
    if not index.store.uses_cells:
        raise SystemExit(f"{args.index} has no token cells")
    local.SCAN_TOKENS = 0  # the wide mode whatever the size
    index.search([queries[0]], k=10)  # builds the postings
    probes = [cell_file.N_PROBE] + [int(p) for p in args.probes.split(",") if p]
    docs = [cell_file.PROBE_DOCS] + [int(p) for p in args.probe_docs.split(",") if p]
    result: dict[str, Any] = {
        "machine": machine(), "index": str(args.index), "documents": n_docs,
        "queries": len(queries), "settings": {
            "WIDE": local.WIDE, "FDE_PART": local.FDE_PART, "N_PROBE": cell_file.N_PROBE,
            "PROBE_DOCS": cell_file.PROBE_DOCS}, "rows": [],
    }  # fmt: skip
    for n in [int(c) for c in args.candidates.split(",")]:
        for n_probe, n_docs in [(p, d) for p in probes for d in docs]:
            rows = [stages(index, q, n, n_probe, n_docs, t)
                    for q, t in zip(queries, truth, strict=True)]  # fmt: skip
            row: dict[str, Any] = {"candidates": n, "n_probe": n_probe, "probe_docs": n_docs}
            for key in rows[0]:
                if key == "ms":
                    row["ms"] = {k: float(np.median([r["ms"][k] for r in rows]))
                                 for k in rows[0]["ms"]}  # fmt: skip
                else:
                    row[key] = float(np.mean([r[key] for r in rows]))
            if (n_probe, n_docs) == (cell_file.N_PROBE, cell_file.PROBE_DOCS):
                times, found, timing = [], [], []
                for q, t in zip(queries, truth, strict=True):
                    t0 = time.perf_counter()
                    res = index.search([q], k=10, candidates=n)
                    times.append(1e3 * (time.perf_counter() - t0))
                    found.append(_share(res.ids[0], t))
                    timing.append(res.timings or {})
                row["search"] = float(np.mean(found))
                row["search p50 ms"] = float(np.median(times))
                for key in ("candidates_ms", "rerank_ms"):
                    row[f"search {key}"] = float(np.median([t.get(key, 0.0) for t in timing]))
            if args.ceiling and (n_probe, n_docs) == (probes[0], docs[0]):
                pairs = zip(queries[: args.ceiling], truth[: args.ceiling], strict=True)
                ceil = [ceiling(index, q, n, t) for q, t in pairs]
                for key in ceil[0]:
                    row[key] = float(np.mean([c[key] for c in ceil]))
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
    print(markdown(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
