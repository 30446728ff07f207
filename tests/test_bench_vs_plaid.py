"""benchmarks/bench_vs_plaid.py's own machinery: documents generated in worker processes are
those generated in one, the exact top-10 is the brute force's, reader processes are pinned
to the CPUs asked for, and its table says where each engine ran."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_vs_plaid as bench  # noqa: E402
from scale_corpus import TextLikeCorpus  # noqa: E402


def small_corpus() -> TextLikeCorpus:
    rng = np.random.default_rng(7)
    lengths = rng.integers(3, 30, size=40).astype(np.int64)
    tokens = rng.standard_normal((int(lengths.sum()), 16)).astype(np.float32)
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    queries = [rng.standard_normal((5, 16)).astype(np.float32) for _ in range(4)]
    return TextLikeCorpus(tokens.astype(np.float16), lengths, queries)


def test_worker_processes_write_the_documents_one_process_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "_CORPUS", small_corpus())
    monkeypatch.setattr(bench, "BATCH", 7)  # several blocks, the last one short
    one = bench._generate(52, tmp_path / "one.f16", workers=1)
    many = bench._generate(52, tmp_path / "many.f16", workers=3)
    np.testing.assert_array_equal(one, many)
    assert (tmp_path / "one.f16").read_bytes() == (tmp_path / "many.f16").read_bytes()
    docs = bench._CORPUS.documents(0, 52)
    assert (tmp_path / "one.f16").read_bytes() == np.concatenate(docs).tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.f16", "one.f16"]  # no parts


def test_exact_top10_is_the_brute_force_maxsim(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    monkeypatch.setattr(bench, "BATCH", 9)  # the running top-10 crosses blocks
    lengths = rng.integers(1, 12, size=50).astype(np.int64)
    tokens = rng.standard_normal((int(lengths.sum()), 8)).astype(np.float16)
    tokens.tofile(tmp_path / "t.f16")
    queries = [rng.standard_normal((int(n), 8)).astype(np.float32) for n in (1, 4, 7)]
    got = bench.exact_top10(tmp_path / "t.f16", lengths, queries)
    docs = np.split(tokens.astype(np.float32), np.cumsum(lengths)[:-1])
    for q, row in zip(queries, got, strict=True):
        scores = np.array([(q @ d.T).max(axis=1).sum() for d in docs])
        np.testing.assert_array_equal(row, np.argsort(-scores, kind="stable")[:10])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity")
def test_pinned_children_run_on_the_cpus_asked_for():
    cpu = min(os.sched_getaffinity(0))
    code = "import os; print(sorted(os.sched_getaffinity(0)), os.environ['OMP_NUM_THREADS'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, **bench.pinned([cpu]))  # fmt: skip
    assert out.stdout.split() == [f"[{cpu}]", "1"]
    assert bench.pinned(None) == {}


def test_table_says_where_each_engine_built_and_searched():
    row = {"documents": 10, "build_s": 2.0, "docs_per_s": 5.0, "bytes_per_doc": 2048,
           "reader_rss_after_open": 2**30, "reader_peak_rss": 2**31, "p50_ms": 1.0,
           "p95_ms": 2.0, "exact_top10_found": 0.9}  # fmt: skip
    result = {"machine": {"cpu": "x", "cpus": 2, "flags": [], "kernel_variant": "generic"},
              "muvera": "0", "corpus": "text-like:10", "queries": 1, "search_cpus": [0, 1],
              "rows": [{**row, "engine": "plaid (gpu)", "build_device": "cuda", "p50_ms": 100.0},
                       {**row, "engine": "muvera", "build_device": "cpu"}],
              "plaid_cpu_build": {"limit_s": 30, "build_s": None, "cpus": 2}}  # fmt: skip
    text = bench.markdown(result)
    assert "plaid built on the GPU, muvera on the CPU" in text
    assert "every CPU search pinned to CPUs [0, 1]" in text
    assert "| 0.010 |" in text  # muvera's p50 against PLAID's: not rounded to 0.0
    assert "not finished after 30 s" in text
    result["plaid_cpu_build"]["build_s"] = 12.4
    assert "(2 CPUs, no GPU): 12 s" in bench.markdown(result)


def test_plaid_build_command_names_the_device():
    args = argparse.Namespace(plaid_python="py", plaid_build_device="cuda")
    c = {"tokens": Path("t.f16"), "lengths": Path("l.npy")}
    command = bench._plaid_build(c, Path("ix"), Path("out.json"), args)
    assert command[1:] == [str(bench.PLAID_WORKER), "build", "t.f16", "l.npy", "ix",
                           "out.json", "cuda"]  # fmt: skip
    assert bench._plaid_build(c, Path("ix"), Path("out.json"), args, "cpu")[-1] == "cpu"
