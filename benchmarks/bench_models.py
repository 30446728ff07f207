"""Text encoding throughput of muvera.ColBERT on SciFact with the shared model.

Encodes the first ``--docs`` SciFact abstracts (title + text, as BEIR does) and the first
``--queries`` queries with ``../shared/models/minilm-colbert-128`` for each batch size of
the sweep, and reports documents/s, output tokens/s, and seconds per 1,000 documents.
Prints a table and writes ``benchmarks/results/model_encode.json``.

Usage: ``python benchmarks/bench_models.py [--device cuda] [--batch-sizes 8,16,32,64]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def read_jsonl(path: Path, limit: int) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if len(rows) >= limit:
                break
            rows.append(json.loads(line))
    return rows


def markdown_table(result: dict) -> str:
    """The README's table, from a JSON file this script wrote."""
    lines = [
        "| batch size | documents/s | document tokens/s | s per 1,000 documents | queries/s |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['batch_size']} | {r['docs_per_s']:.1f} | {r['doc_tokens_per_s']:,.0f} "
            f"| {r['seconds_per_1000_docs']:.0f} | {r['queries_per_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "minilm-colbert-128")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "scifact")
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--batch-sizes", default="8,16,32,64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "model_encode.json"
    )
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print a results table")
    args = parser.parse_args()
    if args.markdown:
        print(markdown_table(json.loads(args.markdown.read_text())))
        return

    import torch

    from muvera import ColBERT, __version__

    corpus = read_jsonl(args.data / "corpus.jsonl", args.docs)
    texts = [(d.get("title", "") + " " + d.get("text", "")).strip() for d in corpus]
    queries = [q["text"] for q in read_jsonl(args.data / "queries.jsonl", args.queries)]
    t0 = time.perf_counter()
    model = ColBERT(args.model, device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - t0
    model.encode_documents(texts[:8])  # warm-up
    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        t0 = time.perf_counter()
        docs = model.encode_documents(texts, batch_size=bs)
        t_docs = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.encode_queries(queries, batch_size=bs)
        t_queries = time.perf_counter() - t0
        tokens = sum(len(d) for d in docs)
        rows.append(
            {
                "batch_size": bs,
                "docs_per_s": len(texts) / t_docs,
                "doc_tokens_per_s": tokens / t_docs,
                "seconds_per_1000_docs": 1000 * t_docs / len(texts),
                "queries_per_s": len(queries) / t_queries,
                "mean_tokens_per_doc": tokens / len(texts),
            }
        )
        r = rows[-1]
        print(
            f"batch {bs:>4}: {r['docs_per_s']:8.1f} docs/s  "
            f"{r['doc_tokens_per_s']:9,.0f} tokens/s  "
            f"{r['seconds_per_1000_docs']:7.1f} s/1000 docs  {r['queries_per_s']:8.1f} queries/s"
        )
    result = {
        "muvera_version": __version__,
        "model": str(args.model.name),
        "device": args.device,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "docs": len(texts),
        "queries": len(queries),
        "load_seconds": load_s,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    refresh_docs(args.out)  # the docs/ tables built from this file


def refresh_docs(results_file: Path) -> None:
    """Re-render the docs/ tables built from ``results_file`` (benchmarks/render_docs.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from render_docs import refresh

    refresh(results_file)


if __name__ == "__main__":
    main()
