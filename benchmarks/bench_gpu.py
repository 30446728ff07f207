"""GPU throughput: text encoding (muvera.ColBERT), FDE encoding and exact MaxSim on CUDA.

For a machine with a CUDA GPU (it says so and stops otherwise). Encodes SciFact's 5,183
abstracts and its 300 test queries with the shared MiniLM late-interaction model in
float32 and bfloat16 (also checking that bfloat16 keeps exact-MaxSim nDCG@10), then times
the torch FDE kernel on the GPU against the numpy kernel on the same machine's CPU, and
brute-force MaxSim on the GPU against numpy. Prints tables and writes JSON.

Usage: ``python benchmarks/bench_gpu.py [--model DIR] [--data DIR] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


def timed(fn: Any, sync: Any, repeats: int = 3) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls (after one warm-up), and the last result."""
    result = fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "minilm-colbert-128")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "scifact")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to measure")
        return

    from muvera import ColBERT, FDEConfig, FDEEncoder, __version__, maxsim
    from muvera.eval import document_text, load_beir, ndcg_at_k

    sync = torch.cuda.synchronize
    corpus, queries, qrels = load_beir(args.data)
    doc_ids, qids = list(corpus), list(queries)
    texts = [document_text(corpus[d]) for d in doc_ids]
    query_texts = [queries[q] for q in qids]
    result: dict[str, Any] = {
        "muvera_version": __version__,
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "documents": len(texts),
        "queries": len(query_texts),
        "encode": [],
        "fde": [],
    }
    print(f"{result['gpu']}, torch {torch.__version__}, {len(texts):,} documents")

    # 1. Text encoding, and exact-MaxSim quality per dtype (GPU brute force).
    tokens: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        model = ColBERT(args.model, device="cuda", dtype=dtype)
        for batch_size in (64, 256):
            seconds, docs = timed(
                lambda m=model, b=batch_size: m.encode_documents(
                    texts, batch_size=b, as_tensors=True
                ),
                sync,
                repeats=2,
            )
            n_tokens = sum(int(d.shape[0]) for d in docs)
            q_seconds, qs = timed(
                lambda m=model, b=batch_size: m.encode_queries(
                    query_texts, batch_size=b, as_tensors=True
                ),
                sync,
                repeats=2,
            )
            row = {
                "dtype": dtype,
                "batch_size": batch_size,
                "docs_per_s": len(texts) / seconds,
                "doc_tokens_per_s": n_tokens / seconds,
                "queries_per_s": len(query_texts) / q_seconds,
            }
            result["encode"].append(row)
            print(
                f"encode {dtype:>8} batch {batch_size:>3}: {row['docs_per_s']:9,.0f} docs/s "
                f"{row['doc_tokens_per_s']:11,.0f} tokens/s {row['queries_per_s']:9,.0f} queries/s"
            )
        tokens[dtype] = (docs, qs)
        scores = maxsim(qs, docs).float().cpu().numpy()
        run = {
            q: {doc_ids[j]: float(scores[i, j]) for j in np.argsort(-scores[i])[:100]}
            for i, q in enumerate(qids)
        }
        ndcg = result[f"exact_ndcg@10_{dtype}"] = ndcg_at_k(run, qrels, 10)
        print(f"exact MaxSim nDCG@10 with {dtype} token vectors: {ndcg:.4f}")

    # 2. FDE encoding: torch kernel on the GPU vs numpy kernel on this machine's CPU.
    docs_gpu, queries_gpu = tokens["float32"]
    docs_cpu = [d.cpu().numpy() for d in docs_gpu]
    queries_cpu = [q.cpu().numpy() for q in queries_gpu]
    rng = np.random.default_rng(0)
    synthetic = [rng.standard_normal((180, 128)).astype(np.float32) for _ in range(5000)]
    synthetic_gpu = [torch.from_numpy(s).cuda() for s in synthetic]
    for name, config in (
        ("R20 k5 AMS16", FDEConfig(dimension=128)),
        ("R20 k5 AMS16 fill", FDEConfig(dimension=128, fill_empty_partitions=True)),
    ):
        encoder = FDEEncoder(config)
        for data, cpu_docs, gpu_docs in (
            ("SciFact tokens", docs_cpu, docs_gpu),
            ("synthetic 180 x 128", synthetic, synthetic_gpu),
        ):
            t_gpu, out_gpu = timed(lambda e=encoder, g=gpu_docs: e.encode_documents(g), sync)
            t_cpu, out_cpu = timed(lambda e=encoder, c=cpu_docs: e.encode_documents(c), sync)
            diff = float(np.abs(out_gpu.cpu().numpy() - out_cpu).max())
            row = {
                "config": name,
                "data": data,
                "gpu_docs_per_s": len(cpu_docs) / t_gpu,
                "cpu_docs_per_s": len(cpu_docs) / t_cpu,
                "max_abs_diff": diff,
            }
            result["fde"].append(row)
            print(
                f"FDE {name:<18} {data:<20}: GPU {row['gpu_docs_per_s']:10,.0f} docs/s, "
                f"CPU numpy {row['cpu_docs_per_s']:8,.0f} docs/s, max |diff| {diff:.1e}"
            )
        t_q, _ = timed(lambda e=encoder: e.encode_queries(queries_gpu), sync)
        result[f"fde_queries_per_s_gpu {name}"] = len(queries_gpu) / t_q

    # 3. Exact MaxSim, all queries x all documents.
    t_gpu, _ = timed(lambda: maxsim(queries_gpu, docs_gpu), sync)
    t_cpu, _ = timed(lambda: maxsim(queries_cpu, docs_cpu), sync, repeats=1)
    result["maxsim"] = {
        "gpu_seconds": t_gpu,
        "cpu_seconds": t_cpu,
        "gpu_ms_per_query": 1000 * t_gpu / len(queries_gpu),
        "cpu_ms_per_query": 1000 * t_cpu / len(queries_gpu),
    }
    print(
        f"exact MaxSim {len(queries_gpu)} x {len(docs_gpu):,}: GPU {t_gpu * 1000:.1f} ms, "
        f"CPU numpy {t_cpu * 1000:.0f} ms"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
