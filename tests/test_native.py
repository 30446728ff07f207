"""The compiled C kernel (muvera/_kernels.c): same FDEs as the numpy kernel, built and used."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import native_kernel_available, ragged

import muvera.scoring
from muvera import FDEConfig, FDEEncoder, MuveraError, maxsim, native

ROOT = Path(__file__).resolve().parents[1]
needs_native = pytest.mark.skipif(
    not native_kernel_available(), reason="the compiled FDE kernel is not built"
)

CONFIGS = [
    # (d, R, k, projection_type, projection_dimension, final_projection_dimension)
    (128, 20, 5, "ams_sketch", 16, None),  # the default
    (128, 10, 4, "ams_sketch", 8, None),
    (48, 3, 3, "ams_sketch", 4, None),
    (33, 2, 2, "ams_sketch", 32, None),
    (70, 2, 3, "ams_sketch", 64, None),
    (130, 3, 2, "ams_sketch", 5, None),  # widths without a specialised loop
    (10, 70, 2, "ams_sketch", 24, 300),  # more repetitions than one sign-bit group (64)
    (7, 4, 0, "ams_sketch", 3, None),  # one partition
    (9, 3, 4, "identity", None, None),
    (5, 2, 12, "identity", None, 64),  # 4096 partitions
]


def _encoders(d, R, k, projection, p, final, fill):
    config = FDEConfig(
        dimension=d,
        num_repetitions=R,
        num_simhash_projections=k,
        projection_type=projection,
        projection_dimension=p,
        final_projection_dimension=final,
        fill_empty_partitions=fill,
        seed=d + R + k,
    )
    return FDEEncoder(config, kernel="numpy"), FDEEncoder(config, kernel="native")


@needs_native
@pytest.mark.parametrize("fill", [False, True])
@pytest.mark.parametrize("case", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_native_equals_numpy(case, fill):
    numpy_enc, native_enc = _encoders(*case, fill)
    assert (numpy_enc.kernel, native_enc.kernel) == ("numpy", "native")
    rng = np.random.default_rng(sum(case[:3]))
    items = ragged(rng, [0, 1, 2, 5, 31, 180, 0, 700, 3], case[0])
    items[4] *= 100.0  # large magnitudes
    for method in ("encode_queries", "encode_documents"):
        want = getattr(numpy_enc, method)(items)
        got = getattr(native_enc, method)(items)
        assert got.dtype == np.float32 and got.shape == want.shape
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale, err_msg=method)
        assert not got[0].any() and not got[6].any()  # empty items: zero rows


@needs_native
def test_native_is_the_default_and_thread_safe():
    config = FDEConfig(dimension=32, num_repetitions=6, num_simhash_projections=4)
    enc = FDEEncoder(config, chunk_tokens=64)
    assert enc.kernel == "native"
    rng = np.random.default_rng(7)
    batches = [ragged(rng, list(rng.integers(0, 60, 40)), 32) for _ in range(4)]
    want = [enc.encode_documents(b) for b in batches]
    got: list[np.ndarray | None] = [None] * 4

    def work(i):
        for _ in range(3):
            got[i] = enc.encode_documents(batches[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g, w)


@needs_native
def test_thread_pool_with_concurrent_callers_and_after_fork(tmp_path, monkeypatch):
    """The kernels' worker pool serves one caller at a time; concurrent callers (the GIL is
    released) start threads of their own, and a forked child gets a pool of its own: every
    result stays exact and nothing hangs."""
    import os

    from muvera.scoring import maxsim_spans

    monkeypatch.setenv("MUVERA_NUM_THREADS", "3")
    monkeypatch.setattr(muvera.scoring, "_NATIVE_WORK_PER_THREAD", 1)
    rng = np.random.default_rng(8)
    tokens = rng.standard_normal((3000, 24)).astype(np.float16)
    lengths = rng.integers(1, 40, 120)
    offsets = np.cumsum(lengths) - lengths
    queries = rng.standard_normal((50, 24)).astype(np.float32)
    q_offsets = np.array([0, 7, 31, 50])
    want = maxsim_spans(tokens, offsets, lengths, queries, q_offsets)
    enc = FDEEncoder(FDEConfig(dimension=24, num_repetitions=4), chunk_tokens=64)
    docs = ragged(rng, list(rng.integers(1, 50, 60)), 24)
    want_fde = enc.encode_documents(docs)
    errors: list[BaseException] = []

    def work(i):
        try:
            for _ in range(20):
                if i % 2:
                    got = maxsim_spans(tokens, offsets, lengths, queries, q_offsets)
                    np.testing.assert_array_equal(got, want)
                else:
                    np.testing.assert_array_equal(enc.encode_documents(docs), want_fde)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and not errors, errors
    if not hasattr(os, "fork"):
        return
    pid = os.fork()
    if pid == 0:  # the child: the pool's threads were not copied
        ok = np.array_equal(maxsim_spans(tokens, offsets, lengths, queries, q_offsets), want)
        os._exit(0 if ok else 1)
    for _ in range(600):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("the forked child hung in the kernel")
    assert os.waitstatus_to_exitcode(status) == 0


def test_kernel_choice_errors(monkeypatch):
    with pytest.raises(MuveraError, match="kernel must be one of"):
        FDEEncoder(FDEConfig(dimension=8), kernel="fast")
    assert FDEEncoder(FDEConfig(dimension=8), kernel="numpy").kernel == "numpy"
    # Too many partitions for the compiled kernel's scratch: numpy, or a clear error.
    big = FDEConfig(dimension=128, num_repetitions=1, num_simhash_projections=20)
    assert FDEEncoder(big).kernel == "numpy"
    expected = "does not take 2" if native_kernel_available() else "not available"
    with pytest.raises(MuveraError, match=expected):
        FDEEncoder(big, kernel="native")
    # MUVERA_NATIVE=0 turns the compiled kernel off.
    monkeypatch.setenv("MUVERA_NATIVE", "0")
    native.load.cache_clear()
    try:
        assert native.load() is None
        assert FDEEncoder(FDEConfig(dimension=8)).kernel == "numpy"
        with pytest.raises(MuveraError, match="not available"):
            FDEEncoder(FDEConfig(dimension=8), kernel="native")
    finally:
        monkeypatch.delenv("MUVERA_NATIVE")
        native.load.cache_clear()


@needs_native
def test_save_load_keeps_the_kernel_choice(tmp_path):
    enc = FDEEncoder(FDEConfig(dimension=16, num_repetitions=2, num_simhash_projections=3))
    enc.save(tmp_path / "enc.npz")
    assert FDEEncoder.load(tmp_path / "enc.npz").kernel == "native"
    assert FDEEncoder.load(tmp_path / "enc.npz", kernel="numpy").kernel == "numpy"
    with pytest.raises(MuveraError, match="kernel must be one of"):
        FDEEncoder.load(tmp_path / "enc.npz", kernel="gpu")


def _build_hook():
    """hatch_build.py as a module (it needs hatchling, a build-time dependency)."""
    pytest.importorskip("hatchling")
    spec = importlib.util.spec_from_file_location("hatch_build", ROOT / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


@pytest.mark.parametrize("variant", list(native.VARIANTS))
def test_build_hook_compiles_a_loadable_kernel(tmp_path, variant):
    """hatch_build.compile_kernel (what `pip install` runs) builds each CPU variant with the
    expected ABI and says which level it was compiled for (without -march=native: nothing
    is tuned for the building machine); without a C compiler it reports why instead of
    raising."""
    import ctypes
    import platform

    if variant != "generic" and variant not in native.variants.build_variants():
        pytest.skip(f"{variant} is not built on {platform.machine()}")
    hook = _build_hook()
    assert "-march=native" not in hook.BASE_FLAGS + list(native.VARIANTS[variant])
    out = tmp_path / native.library_filename(variant)
    error = hook.compile_kernel(ROOT, out, variant)
    if error is not None and "no C compiler" in error:
        pytest.skip(error)
    assert error is None, error
    assert not out.with_name(out.name + ".tmp").exists()
    if native.LEVELS[variant] > native.cpu_level():
        return  # built, but this CPU cannot run it
    lib = ctypes.CDLL(str(out))
    for name in ("muvera_abi_version", "muvera_compiled_level", "muvera_cpu_level"):
        getattr(lib, name).restype = ctypes.c_int64
    assert lib.muvera_abi_version() == native.ABI_VERSION
    assert lib.muvera_compiled_level() == native.LEVELS[variant]
    assert lib.muvera_cpu_level() == native.cpu_level()


@needs_native
@pytest.mark.parametrize("d", [5, 16, 128])
def test_native_maxsim_equals_numpy(monkeypatch, d):
    """Query groups of 32 lanes (1, 31, 32, 33, 70 tokens), token tiles of 8 (and their
    remainders), empty documents and queries, spans in any order, 1 or several threads."""
    from muvera.scoring import maxsim_spans

    rng = np.random.default_rng(d)
    queries = ragged(rng, [1, 31, 32, 0, 33, 70], d, unit=False)
    docs = ragged(rng, [0, 1, 7, 8, 9, 17, 250, 3], d, unit=False)
    monkeypatch.setattr(native, "load", lambda: None)
    want = maxsim(queries, docs)  # numpy
    monkeypatch.undo()
    got = maxsim(queries, docs)  # compiled
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert np.isneginf(got[0, 0]) and (got[3] == 0).all()  # empty doc -inf, empty query 0
    # Spans read in place, in any order and with gaps, from float32 or float16 rows.
    matrix = np.concatenate([np.zeros((3, d), np.float32), *docs[::-1]])
    lengths = np.array([len(x) for x in docs[::-1]])
    offsets = 3 + np.cumsum(lengths) - lengths
    order = rng.permutation(len(docs))
    q_all = np.concatenate(queries)
    q_offsets = np.concatenate([[0], np.cumsum([len(q) for q in queries])])
    for threads in ("1", "3"):
        monkeypatch.setenv("MUVERA_NUM_THREADS", threads)
        monkeypatch.setattr(muvera.scoring, "_NATIVE_WORK_PER_THREAD", 1)
        spans = maxsim_spans(matrix, offsets[order], lengths[order], q_all, q_offsets)
        np.testing.assert_allclose(spans, want[:, ::-1][:, order], rtol=1e-5, atol=1e-4)
        half = matrix.astype(np.float16)
        got16 = maxsim_spans(half, offsets, lengths, q_all, q_offsets)
        want16 = maxsim(
            queries,
            [half[o : o + n].astype(np.float32) for o, n in zip(offsets, lengths, strict=True)],
        )
        np.testing.assert_allclose(got16, want16, rtol=1e-5, atol=1e-4)
    with pytest.raises(MuveraError, match="outside the token matrix"):
        maxsim_spans(matrix, np.array([len(matrix) - 1]), np.array([2]), q_all, q_offsets)
    with pytest.raises(MuveraError, match="one length"):
        maxsim_spans(matrix, offsets, lengths[:-1], q_all, q_offsets)
    with pytest.raises(MuveraError, match="queries must be"):
        maxsim_spans(matrix, offsets, lengths, q_all[:, :-1], q_offsets)
    for bad in ([1, 3], [0, 5, 2], [0, len(q_all) + 1], []):
        with pytest.raises(MuveraError, match="query_offsets must rise"):
            maxsim_spans(matrix, offsets, lengths, q_all, np.array(bad, dtype=np.int64))


@needs_native
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_maxsim_pairs_equal_the_full_matrix(monkeypatch, dtype):
    """Each (query, span) pair scored as in the full matrix: pairs in any order, spans
    repeated across queries, empty spans and queries, 1 or several threads, the compiled
    kernel and the numpy fallback; a strided pair_query (np.nonzero of a 2-D mask) works."""
    from muvera.scoring import maxsim_pairs, maxsim_spans

    rng = np.random.default_rng(7)
    docs = ragged(rng, [0, 1, 7, 9, 17, 250, 3], 24, unit=False)
    queries = ragged(rng, [1, 12, 0, 33, 70], 24, unit=False)
    tokens = np.concatenate(docs).astype(dtype)
    lengths = np.array([len(x) for x in docs])
    offsets = np.cumsum(lengths) - lengths
    q_all = np.concatenate(queries)
    q_offsets = np.concatenate([[0], np.cumsum([len(q) for q in queries])])
    full = maxsim_spans(tokens, offsets, lengths, q_all, q_offsets)
    mask = rng.random((len(queries), len(docs))) < 0.6
    pair_query, pair_doc = np.nonzero(mask)  # views into one (n, 2) array: strided
    assert not pair_query.flags.c_contiguous
    want = full[pair_query, pair_doc]
    for threads in ("1", "3"):
        monkeypatch.setenv("MUVERA_NUM_THREADS", threads)
        monkeypatch.setattr(muvera.scoring, "_NATIVE_WORK_PER_THREAD", 1)
        got = maxsim_pairs(tokens, offsets[pair_doc], lengths[pair_doc], pair_query, q_all,
                           q_offsets)  # fmt: skip
        np.testing.assert_array_equal(got, want)
        shuffled = rng.permutation(len(want))
        got = maxsim_pairs(tokens, offsets[pair_doc][shuffled], lengths[pair_doc][shuffled],
                           pair_query[shuffled], q_all, q_offsets, checked=True)  # fmt: skip
        np.testing.assert_array_equal(got, want[shuffled])
    monkeypatch.setattr(native, "load", lambda: None)
    got = maxsim_pairs(tokens, offsets[pair_doc], lengths[pair_doc], pair_query, q_all, q_offsets)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    for bad in (pair_query + len(queries), -pair_query - 1, pair_query[:-1], pair_query * 1.0):
        with pytest.raises(MuveraError, match="pair_query"):
            maxsim_pairs(tokens, offsets[pair_doc], lengths[pair_doc], bad, q_all, q_offsets)


@needs_native
def test_native_float16_conversion_handles_every_class_of_value():
    """Zeros, subnormals, normals, the largest finite values: the compiled kernel's float16
    conversion (F16C and its portable fallback for odd tails) agrees with numpy's."""
    from muvera.scoring import maxsim_spans

    bits = np.array(
        [0x0000, 0x8000, 0x0001, 0x03FF, 0x8200, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x3555],
        dtype=np.uint16,
    )
    values = bits.view(np.float16)
    for d in (1, 3, 11):  # row widths that leave tails for the scalar conversion
        rows = np.resize(values, (len(values) * 2 // d + 1) * d).reshape(-1, d)
        for r in range(rows.shape[0]):
            query = np.zeros((1, d), np.float32)
            query[0, r % d] = 1.0
            got = maxsim_spans(rows, np.array([r]), np.array([1]), query, np.array([0, 1]))
            assert got is not None
            assert got[0, 0] == np.float32(rows[r, r % d]), (d, r)


def test_build_hook_reports_a_missing_or_failing_compiler(tmp_path, monkeypatch):
    """No compiler, or one that fails: a reason to print, no exception, no library left."""
    hook = _build_hook()
    out = tmp_path / native.library_filename("generic")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert hook.compile_kernel(ROOT, out).startswith("no C compiler")
    fake = tmp_path / "failing-cc"
    fake.write_text("#!/bin/sh\necho 'error: broken' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    error = hook.compile_kernel(ROOT, out)
    assert error is not None and "failed" in error and "broken" in error
    assert not out.exists() and not out.with_name(out.name + ".tmp").exists()
