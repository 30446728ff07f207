"""PyLate's PLAID index (fast-plaid backend, CPU) on given token vectors: the other side of
``bench_vs_plaid.py``, run in a Python environment that has ``pylate`` and ``fast-plaid``
(their pins differ from muvera's; numpy and the standard library only besides them).

``python plaid_worker.py build TOKENS.f16 LENGTHS.npy INDEX_DIR OUT.json [DEVICE]`` (raw
float16 rows, int64 lengths; DEVICE cpu, the default, or cuda): builds the index
from all documents in one ``add_documents`` call (as PyLate's docs do; PLAID fits its
centroids on the first call), reports build seconds and peak RSS.
``python plaid_worker.py search QUERIES.npz INDEX_DIR OUT.json N1,N2,... [DEVICE [WARM]]``:
opens the index in a fresh process (on DEVICE; on the CPU with torch's threads set to the
CPUs this process may use; WARM: queries of the warm-up pass, default all) and, for each
``n_full_scores`` value (documents scored fully; PyLate's
default 8192, Stanford PLAID's k=10 setting 256), searches every query alone twice (the
first pass warms up) and reports the second pass's latencies and top-10 document numbers,
with RSS after opening and peak RSS.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def memory(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _index(folder: Path, override: bool, device: str):  # returns pylate's PLAID index
    import os

    import torch
    from pylate import indexes

    if device == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    return indexes.PLAID(index_folder=str(folder.parent), index_name=folder.name,
                         override=override, device=device, show_progress=False)  # fmt: skip


def build(tokens_file: Path, lengths_file: Path, folder: Path, out: Path, device: str) -> None:
    import torch

    lengths = np.load(lengths_file)
    tokens = np.memmap(tokens_file, dtype=np.float16, mode="r").reshape(int(lengths.sum()), -1)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    docs = [torch.from_numpy(np.asarray(tokens[o : o + n], np.float32))
            for o, n in zip(offsets.tolist(), lengths.tolist(), strict=True)]  # fmt: skip
    t0 = time.perf_counter()
    index = _index(folder, override=True, device=device)
    index.add_documents(documents_ids=[str(i) for i in range(len(docs))], documents_embeddings=docs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out.write_text(json.dumps({"build_s": seconds, "rss_peak": memory("VmHWM")}))


def search(queries_file: Path, folder: Path, out: Path, full_scores: list[int], device: str,
           warm: int = -1) -> None:  # fmt: skip
    with np.load(queries_file) as z:
        queries = [z[f"arr_{i}"].astype(np.float32) for i in range(len(z.files))]
    index = _index(folder, override=False, device=device)
    rss_open = memory("VmRSS")
    runs = {}
    for n_full in full_scores:
        index._index.n_full_scores = n_full  # the FastPlaid backend's setting
        for q in queries if warm < 0 else queries[:warm]:
            index([q], k=10)
        times, ids = [], []
        for q in queries:
            t0 = time.perf_counter()
            hits = index([q], k=10)[0]
            times.append(1000 * (time.perf_counter() - t0))
            ids.append([int(h["id"]) for h in hits])
        runs[str(n_full)] = {"times_ms": times, "ids": ids}
    out.write_text(json.dumps({"runs": runs, "rss_open": rss_open, "rss_peak": memory("VmHWM")}))


if __name__ == "__main__":
    where = sys.argv[6] if len(sys.argv) > 6 else "cpu"
    if sys.argv[1] == "build":
        build(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]), where)
    else:
        search(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]),
               [int(n) for n in sys.argv[5].split(",")], where,
               int(sys.argv[7]) if len(sys.argv) > 7 else -1)  # fmt: skip
