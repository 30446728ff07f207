"""Run-time CPU dispatch of the compiled kernels: the loader picks the best variant this CPU
runs, every variant gives the same results, and the fallbacks say what they do."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from helpers import ragged

from muvera import FDEConfig, FDEEncoder, native
from muvera.native import loader
from muvera.scoring import maxsim_spans
from muvera.stores.hnsw_graph import QuantizedGraph

RUNNABLE = [v for v in native.VARIANTS if native.load_variant(v) is not None]
needs_two = pytest.mark.skipif(len(RUNNABLE) < 2, reason="fewer than two variants run here")


@pytest.fixture
def fresh_loader(monkeypatch):
    """Forget what the loader picked, before and after the test."""
    for fn in (loader.load, loader.load_variant, loader.cpu_level):
        fn.cache_clear()
    yield monkeypatch
    for fn in (loader.load, loader.load_variant, loader.cpu_level):
        fn.cache_clear()


def test_load_picks_the_best_runnable_variant(fresh_loader):
    kernel = native.load()
    if kernel is None:
        pytest.skip("no compiled kernels built")
    best = max(RUNNABLE, key=native.LEVELS.__getitem__)
    assert kernel.variant == best
    assert native.LEVELS[best] <= native.cpu_level()
    for variant in native.built_variants():  # built but beyond this CPU: never loaded
        if native.LEVELS[variant] > native.cpu_level():
            assert native.load_variant(variant) is None


def test_muvera_cpu_forces_a_variant_or_warns(fresh_loader, caplog):
    if not RUNNABLE:
        pytest.skip("no compiled kernels built")
    fresh_loader.setenv("MUVERA_CPU", "generic")
    assert native.load().variant == "generic"
    loader.load.cache_clear()
    fresh_loader.setenv("MUVERA_CPU", "sparc")
    with caplog.at_level(logging.WARNING, logger="muvera"):
        kernel = native.load()
    assert kernel is not None and kernel.variant == max(RUNNABLE, key=native.LEVELS.__getitem__)
    assert "MUVERA_CPU=sparc" in caplog.text


def test_missing_libraries_fall_back_to_numpy_with_one_warning(fresh_loader, tmp_path, caplog):
    fresh_loader.setenv("MUVERA_NATIVE_DIR", str(tmp_path))  # a folder without libraries
    with caplog.at_level(logging.WARNING, logger="muvera"):
        assert native.load() is None
        assert native.load() is None
    assert caplog.text.count("not built") == 1
    assert FDEEncoder(FDEConfig(dimension=8)).kernel == "numpy"
    caplog.clear()
    fresh_loader.setenv("MUVERA_NATIVE", "0")  # asked for: no warning
    loader.load.cache_clear()
    with caplog.at_level(logging.WARNING, logger="muvera"):
        assert native.load() is None
    assert caplog.text == ""


def test_a_library_of_another_level_or_abi_is_not_used(fresh_loader, tmp_path):
    """A file named for one variant but compiled for another is refused (it could hold
    instructions this CPU lacks)."""
    import shutil

    if "generic" not in RUNNABLE:
        pytest.skip("no compiled kernels built")
    fake = tmp_path / native.library_filename("generic")
    real = native.load_variant("generic").path
    shutil.copy(real, fake)
    shutil.copy(real, tmp_path / native.library_filename("avx2"))  # a generic build
    fresh_loader.setenv("MUVERA_NATIVE_DIR", str(tmp_path))
    assert native.load_variant("generic") is not None
    assert native.load_variant("avx2") is None


@needs_two
def test_every_variant_encodes_the_same_fdes():
    rng = np.random.default_rng(0)
    docs = ragged(rng, [1, 7, 40, 0, 180], 128)
    for config in (
        FDEConfig(dimension=128, num_repetitions=20, num_simhash_projections=5,
                  projection_dimension=16, fill_empty_partitions=True),
        FDEConfig(dimension=128, num_repetitions=3, num_simhash_projections=4,
                  projection_type="identity"),
    ):  # fmt: skip
        encoder = FDEEncoder(config, kernel="numpy")
        want = encoder.encode_documents(docs)
        for variant in RUNNABLE:
            from muvera.fde.compiled_steps import CompiledFDE

            steps = CompiledFDE(encoder.plan, native.load_variant(variant))
            tokens = np.concatenate(docs)
            got = steps.encode(tokens, np.array([len(d) for d in docs]), True)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=variant)


@needs_two
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_every_variant_computes_the_same_maxsim(dtype):
    rng = np.random.default_rng(1)
    docs = ragged(rng, [0, 1, 9, 33, 250], 96, unit=False)
    queries = ragged(rng, [1, 31, 32, 33, 70], 96, unit=False)
    tokens = np.concatenate(docs).astype(dtype)
    lengths = np.array([len(d) for d in docs])
    offsets = np.cumsum(lengths) - lengths
    q_all = np.concatenate(queries)
    q_offsets = np.concatenate([[0], np.cumsum([len(q) for q in queries])])
    results = {}
    for variant in RUNNABLE:
        out = np.empty((len(queries), len(docs)), np.float32)
        native.load_variant(variant).maxsim(tokens, offsets, lengths, q_all, q_offsets, out, 2)
        results[variant] = out
    want = maxsim_spans(tokens, offsets, lengths, q_all, q_offsets)
    pair_query, pair_doc = (x.copy() for x in np.nonzero(np.ones(want.shape, bool)))
    for variant, got in results.items():
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=variant)
        pairs = np.empty(pair_query.shape, np.float32)
        native.load_variant(variant).maxsim_pairs(
            tokens, offsets[pair_doc], lengths[pair_doc], pair_query, q_all, q_offsets, pairs, 2
        )
        np.testing.assert_array_equal(pairs, got[pair_query, pair_doc], err_msg=variant)


@needs_two
def test_every_variant_walks_the_graph_to_the_same_integers(tmp_path):
    """int8 inner products are exact integers: VNNI, AVX2 and plain C agree bit for bit."""
    hnswlib = pytest.importorskip("hnswlib")
    rng = np.random.default_rng(2)
    data = rng.standard_normal((500, 200)).astype(np.float32)  # d % 64 != 0: masked tail
    index = hnswlib.Index(space="ip", dim=200)
    index.init_index(max_elements=500, M=8, ef_construction=60, random_seed=1)
    index.add_items(data, np.arange(500), num_threads=1)
    index.mark_deleted(3)
    index.save_index(str(tmp_path / "g.bin"))
    graph = QuantizedGraph.read(tmp_path / "g.bin", 200)
    queries = rng.standard_normal((20, 200)).astype(np.float32)
    first = graph.search(native.load_variant(RUNNABLE[0]), queries, 15, 30, 2)
    for variant in RUNNABLE[1:]:
        for threads in (1, 2):
            got = graph.search(native.load_variant(variant), queries, 15, 30, threads)
            np.testing.assert_array_equal(got[0], first[0], err_msg=variant)
            np.testing.assert_array_equal(got[1], first[1], err_msg=variant)


def test_the_generic_variant_leaves_maxsim_to_numpy(fresh_loader):
    """The generic build's MaxSim is slower than numpy's BLAS path: with it, numpy scores
    (same results), while FDEs still run compiled."""
    import muvera.scoring as scoring

    if "generic" not in RUNNABLE:
        pytest.skip("no compiled kernels built")
    fresh_loader.setenv("MUVERA_CPU", "generic")
    assert native.load().variant == "generic" and scoring.compiled_maxsim() is None
    calls = []
    real = scoring._spans_numpy
    fresh_loader.setattr(scoring, "_spans_numpy", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(3)
    docs, queries = ragged(rng, [3, 9], 16), ragged(rng, [2], 16)
    got = scoring.maxsim(queries, docs)
    assert calls
    np.testing.assert_allclose(got, [[(q @ d.T).max(1).sum() for d in docs] for q in queries],
                               rtol=1e-5)  # fmt: skip
    assert FDEEncoder(FDEConfig(dimension=16)).kernel == "native"
    if len(RUNNABLE) > 1:
        loader.load.cache_clear()
        fresh_loader.delenv("MUVERA_CPU")
        assert scoring.compiled_maxsim() is not None
