"""Token cells: the k-means tree, the approximate MaxSim kernel (every CPU variant against a
literal reference), and the index that fits, stores, compacts and searches with them."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import format_version, ragged
from hypothesis import given, settings
from hypothesis import strategies as st

from muvera import FDEConfig, Index, MuveraError, native
from muvera.cells import (
    CELL_COUNTS,
    MIN_FIT_TOKENS,
    Cells,
    cell_scores,
    kmeans,
    min_fit_tokens,
    split,
)  # fmt: skip
from muvera.index.info import describe
from muvera.index.manifest import CELL_COUNT_FORMAT_VERSION
from muvera.postings import _probed_cells
from muvera.scoring import maxsim_spans
from muvera.stores import cell_file

RUNNABLE = [v for v in native.VARIANTS if native.load_variant(v) is not None]
D = 8


def literal_scores(table, codes, offsets, lengths):
    """sum_i max_t table[code_t, i], written out."""
    out = []
    for off, n in zip(offsets, lengths, strict=True):
        if n == 0:
            out.append(-np.inf)
            continue
        total = 0.0
        for i in range(table.shape[1]):
            total += max(float(table[codes[t], i]) for t in range(off, off + n))
        out.append(total)
    return np.array(out, np.float32)


def _spans(rng, n_docs, max_len=40):
    lengths = rng.integers(0, max_len, n_docs).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return offsets, lengths, int(lengths.sum())


@pytest.mark.parametrize("width", [1, 5, 16, 31, 32, 33, 64, 70])
def test_kernels_equal_the_literal_reference(width):
    rng = np.random.default_rng(width)
    offsets, lengths, rows = _spans(rng, 60)
    table = rng.standard_normal((300, width)).astype(np.float32)
    codes = rng.integers(0, 300, rows).astype(np.uint16)
    want = literal_scores(table, codes, offsets, lengths)
    np.testing.assert_allclose(
        cell_scores(table, codes, offsets, lengths, use_native=False), want, rtol=1e-5, atol=1e-4
    )
    for variant in RUNNABLE:
        kernel = native.load_variant(variant)
        padded = np.pad(table, ((0, 0), (0, -width % 32)))
        out = np.empty(offsets.size, np.float32)
        assert kernel.cell_scores(padded, codes, offsets, lengths, out, 2) == 0
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4, err_msg=variant)
    np.testing.assert_allclose(cell_scores(table, codes, offsets, lengths), want, 1e-5, 1e-4)


@pytest.mark.parametrize("use_native", [True, False])
def test_bad_codes_and_spans_raise(use_native):
    table = np.ones((10, 32), np.float32)
    codes = np.array([1, 2, 10, 3], np.uint16)  # 10 is past the table
    with pytest.raises(MuveraError, match="does not fit"):
        cell_scores(table, codes, np.array([0]), np.array([4]), use_native=use_native)
    codes[2] = 0
    with pytest.raises(MuveraError, match="does not fit"):
        cell_scores(table, codes, np.array([2]), np.array([3]), use_native=use_native)
    with pytest.raises(MuveraError, match="does not fit"):
        cell_scores(table, codes, np.array([-1]), np.array([2]), use_native=use_native)
    if use_native and native.load() is not None:  # the kernel refuses a width it cannot read
        out = np.empty(1, np.float32)
        bad = np.ones((10, 20), np.float32)
        assert native.load().cell_scores(bad, codes, np.array([0]), np.array([1]), out, 1) == -3


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**31))
def test_cells_of_distinct_tokens_score_exact_maxsim(n_docs, seed):
    """With a cell per token (fewer tokens than cells), every token is its own centroid, so
    the approximate MaxSim is the exact one."""
    rng = np.random.default_rng(seed)
    docs = ragged(rng, rng.integers(1, 8, n_docs), D)
    tokens = np.concatenate(docs)  # at most 42 tokens: one cell each of the 64
    cells = Cells.fit(tokens, coarse=1, fine=64)
    codes = cells.assign(tokens)
    np.testing.assert_array_equal(cells.fine[codes], tokens)
    lengths = np.array([len(x) for x in docs], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    q = rng.standard_normal((5, D)).astype(np.float32)
    exact = maxsim_spans(tokens, offsets, lengths, q, np.array([0, 5]))[0]
    np.testing.assert_allclose(cell_scores(cells.table(q), codes, offsets, lengths), exact,
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_fit_is_deterministic_and_assigns_nearest():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5000, D)).astype(np.float32)
    a, b = Cells.fit(x, 8, 16), Cells.fit(x, 8, 16)
    np.testing.assert_array_equal(a.fine, b.fine)
    codes = a.assign(x)
    assert codes.dtype == np.uint16 and int(codes.max()) < a.n_cells
    top = np.argmin(((x[:, None] - a.coarse[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(codes // a.n_fine, top)  # inside the nearest coarse cell
    c = kmeans(x, 4, np.random.default_rng(0))
    assert c.shape == (4, D) and np.isfinite(c).all()
    with pytest.raises(MuveraError, match="finite"):
        Cells.fit(np.full((10, D), np.nan, np.float32))
    with pytest.raises(MuveraError, match="65,536"):
        Cells.fit(x, 512, 512)


# -- the index ---------------------------------------------------------------------------


def _corpus(seed=0, n=420, length=90):
    """Enough tokens to fit the cells (n * length > MIN_FIT_TOKENS)."""
    rng = np.random.default_rng(seed)
    docs = ragged(rng, rng.integers(length // 2, 3 * length // 2, n), D)
    assert sum(map(len, docs)) > MIN_FIT_TOKENS
    return rng, docs


def _found(ids, exact):
    return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact, strict=True)])


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


@pytest.mark.parametrize("store", ["hnswlib", "exact"])
@pytest.mark.parametrize("token_dtype", ["float16", "int8"])
def test_index_fits_cells_once_it_holds_enough_tokens(tmp_path, store, token_dtype):
    rng, docs = _corpus()
    path = tmp_path / "ix"
    with Index.create(path, FDEConfig(dimension=D), store, token_dtype=token_dtype) as index:
        index.add(list(range(20)), docs[:20])  # too few tokens: no cells yet
        assert _manifest(path)["tokens"]["cells"] == {}
        before = 4 if token_dtype == "int8" else 1
        assert _manifest(path)["format_version"] == format_version(_manifest(path), before)
        index.add(list(range(20, len(docs))), docs[20:])
        cells = _manifest(path)["tokens"]["cells"]
        assert cells["coarse"] == 128 and cells["fine"] == 64
        assert _manifest(path)["format_version"] == format_version(_manifest(path), 5)
        stored = index.store.cells
        rows = sum(map(len, docs))
        assert stored.code_rows().shape == (rows,)
        # the earlier rows were assigned at the fit from the stored (rounded) rows, the
        # added ones from the vectors given
        early = np.concatenate([index.tokens(i) for i in range(20)])
        codes = stored.code_rows()
        np.testing.assert_array_equal(codes[: len(early)], stored.cells.assign(early))
        later = stored.cells.assign(np.concatenate(docs[20:]))
        np.testing.assert_array_equal(codes[len(early) :], later)
        queries = [docs[i][:6] + 0.05 * rng.standard_normal((6, D)).astype(np.float32)
                   for i in range(0, 400, 40)]  # fmt: skip
        exact = index.search_exact(queries, k=10)
        hits = index.search(queries, k=10, candidates=60)
        found = _found(hits.ids, exact.ids)
        off = Index.create(
            tmp_path / "off",
            FDEConfig(dimension=D),
            store,
            token_dtype=token_dtype,
            store_options={"token_cells": False},
        )
        with off:
            off.add(list(range(len(docs))), docs)
            assert "cells" not in _manifest(tmp_path / "off")["tokens"]
            base = off.search(queries, k=10, candidates=60)
        base_found = _found(base.ids, exact.ids)
        assert found > base_found and found >= 0.8  # 0.85 vs 0.62 on these noise tokens
        np.testing.assert_allclose(hits.scores[hits.ids == exact.ids],
                                   exact.scores[hits.ids == exact.ids], rtol=1e-5)  # fmt: skip
    reader = Index.open(path, mode="r")
    again = reader.search(queries, k=10, candidates=60)
    np.testing.assert_array_equal(again.ids, hits.ids)


def test_candidates_keep_the_fde_part_then_fill_from_cells(tmp_path):
    _rng, docs = _corpus(1)
    with Index.create(tmp_path / "ix", FDEConfig(dimension=D), "exact") as index:
        index.add(list(range(len(docs))), docs)
        q = [docs[7][:5]]
        store = index.store
        keep = -(-40 // cell_file.SCAN_PART)
        fde = index.search(q, k=keep, rerank=False).ids[0]
        seen = []
        real = store._rerank

        def spy(queries, labels, k):
            seen.append(labels.copy())
            return real(queries, labels, k)

        store._rerank = spy
        index.search(q, k=10, candidates=40)
        labels = seen[0][0]
        assert labels.shape == (40,) and len(set(labels.tolist())) == 40
        np.testing.assert_array_equal(labels[:keep], [int(i) for i in fde])  # ids = labels here


def test_filters_and_deletes_with_cells(tmp_path):
    _rng, docs = _corpus(2)
    payloads = [{"even": i % 2 == 0} for i in range(len(docs))]
    with Index.create(tmp_path / "ix", FDEConfig(dimension=D)) as index:
        index.add(list(range(len(docs))), docs, payloads=payloads)
        index.delete(list(range(0, 100, 3)))
        q = [docs[i][:5] for i in range(1, 60, 7)]
        flt = {"must": [{"key": "even", "match": {"value": False}}]}
        hits = index.search(q, k=10, candidates=50, query_filter=flt)
        alive = {i for i in range(len(docs)) if i >= 100 or i % 3}
        got = {int(x) for x in hits.ids.ravel() if x != -1}
        assert got <= {i for i in alive if i % 2 == 1}


def test_compaction_keeps_codes_aligned(tmp_path):
    _rng, docs = _corpus(3)
    path = tmp_path / "ix"
    with Index.create(path, FDEConfig(dimension=D), "exact") as index:
        index.add(list(range(len(docs))), docs)
        index.delete(list(range(0, len(docs), 2)))
        index.compact()
        cells = _manifest(path)["tokens"]["cells"]
        assert cells["file"].startswith("cells-")
        stored = index.store.cells
        live = list(range(1, len(docs), 2))
        before = stored.cells.assign(np.concatenate(docs))
        spans = np.cumsum([0] + [len(x) for x in docs])
        kept = np.concatenate([before[spans[i] : spans[i + 1]] for i in live])
        np.testing.assert_array_equal(stored.code_rows(), kept)
    reader = Index.open(path, mode="r")
    q = [docs[1][:5]]
    assert reader.search(q, k=1).ids[0, 0] == 1


def test_a_failed_bulk_forgets_the_fit(tmp_path):
    _rng, docs = _corpus(4)
    path = tmp_path / "ix"
    with Index.create(path, FDEConfig(dimension=D)) as index:
        index.add([0], docs[:1])

        def failing():
            with index.bulk():
                index.add(list(range(1, len(docs))), docs[1:])
                assert index.store.cells.fitted
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            failing()
        assert _manifest(path)["tokens"]["cells"] == {}
        assert not index.store.cells.fitted
        index.add(list(range(1, len(docs))), docs[1:])
        assert index.store.cells.fitted
    assert len(Index.open(path, mode="r")) == len(docs)


@pytest.mark.parametrize("value", [1, 1000, 2048.0, "8192", 131072, 512, None])
def test_token_cells_option(tmp_path, value):
    with pytest.raises(MuveraError, match="token_cells"):
        Index.create(tmp_path / "a", FDEConfig(dimension=D), store_options={"token_cells": value})
    assert not (tmp_path / "a").exists()


def test_split_and_sizes_of_a_cell_count():
    assert [split(n) for n in CELL_COUNTS] == [
        (32, 32), (64, 32), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256)
    ]  # fmt: skip
    assert min_fit_tokens(8192) == MIN_FIT_TOKENS and min_fit_tokens(65536) == 4 * 65536
    for bad in (0, 3, 4096 + 1, 1 << 17):
        with pytest.raises(MuveraError, match="count"):
            split(bad)


@pytest.mark.parametrize("store", ["hnswlib", "exact"])
def test_a_cell_count_is_kept_until_the_fit(tmp_path, store):
    """token_cells=16384: {"count": 16384} (format 9) until 65,536 tokens, across a reopen;
    then a 128 x 128 tree, found as well as the default's."""
    rng = np.random.default_rng(3)
    docs = ragged(rng, rng.integers(45, 135, 800), D)
    assert sum(map(len, docs[:-60])) > min_fit_tokens(16384) > sum(map(len, docs[:200]))
    path = tmp_path / "ix"
    options = {"token_cells": 16384}
    with Index.create(path, FDEConfig(dimension=D), store, store_options=options) as index:
        index.add(list(range(200)), docs[:200])
        assert _manifest(path)["tokens"]["cells"] == {"count": 16384}
        assert _manifest(path)["format_version"] == CELL_COUNT_FORMAT_VERSION
        assert (
            "16,384 cells, fitted once the index holds 65,536 tokens"
            in describe(index)["token_cells"]
        )
    with Index.open(path) as index:  # the count survives a reopen of the writer
        assert not index.store.uses_cells
        index.add(list(range(200, len(docs))), docs[200:])
        cells = _manifest(path)["tokens"]["cells"]
        assert (cells["coarse"], cells["fine"]) == (128, 128)
        assert describe(index)["token_cells"].startswith("128 x 128 cells")
    queries = [docs[i][:6] + 0.05 * rng.standard_normal((6, D)).astype(np.float32)
               for i in range(0, 800, 80)]  # fmt: skip
    reader = Index.open(path, mode="r")
    assert reader.store.cells.cells.n_cells == 16384
    exact = reader.search_exact(queries, k=10)
    hits = reader.search(queries, k=10, candidates=60)
    assert _found(hits.ids, exact.ids) >= 0.8


def test_a_bad_cell_count_on_disk_raises_muvera_error(tmp_path):
    path = tmp_path / "ix"
    options = {"token_cells": 1024}
    with Index.create(path, FDEConfig(dimension=D), "exact", store_options=options) as index:
        index.add([0], [np.ones((3, D), np.float32)])
    for count in (1000, True, "1024", 1024.0, 1 << 17, None):
        manifest = _manifest(path)
        manifest["tokens"]["cells"] = {"count": count}
        (path / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(MuveraError, match="count"):
            Index.open(path, mode="r")


def _fitted(tmp_path):
    _rng, docs = _corpus(5)
    path = tmp_path / "ix"
    with Index.create(path, FDEConfig(dimension=D), "exact") as index:
        index.add(list(range(len(docs))), docs)
    return path, docs


def _edit_cells(path, **changes):
    manifest = _manifest(path)
    manifest["tokens"]["cells"].update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_damaged_cell_files_raise_muvera_error(tmp_path):
    path, docs = _fitted(tmp_path)
    cells = _manifest(path)["tokens"]["cells"]
    raw = (path / cells["centroids"]).read_bytes()
    codes = (path / cells["file"]).read_bytes()
    for changes, message in (
        ({"bytes": cells["bytes"] - 2}, "bytes of cell codes"),
        ({"coarse": 0}, "'coarse'"),
        ({"fine": True}, "'fine'"),
        ({"file": "../x"}, "not a file name"),
        ({"centroids": "/etc/passwd"}, "not a file name"),
        ({"fine": 32}, "expected"),
    ):
        _edit_cells(path, **changes)
        with pytest.raises(MuveraError, match=message):
            Index.open(path, mode="r")
        _edit_cells(path, **cells)
    (path / cells["centroids"]).write_bytes(raw[:-4])
    with pytest.raises(MuveraError, match="expected"):
        Index.open(path, mode="r")
    nan = np.frombuffer(raw, "<f4").copy()
    nan[3] = np.nan
    (path / cells["centroids"]).write_bytes(nan.tobytes())
    with pytest.raises(MuveraError, match="finite"):
        Index.open(path, mode="r")
    (path / cells["centroids"]).write_bytes(raw)
    bad = np.frombuffer(codes, "<u2").copy()
    bad[::7] = 65535  # codes past the 8,192 cells: refused by the kernel, no crash
    (path / cells["file"]).write_bytes(bad.tobytes())
    reader = Index.open(path, mode="r")
    with pytest.raises(MuveraError, match="does not fit"):
        reader.search([docs[0][:4]], k=5, candidates=30)
    (path / cells["file"]).write_bytes(codes)
    os.remove(path / cells["file"])
    with pytest.raises(MuveraError, match="codes"):
        Index.open(path, mode="r")


def test_wide_mode_ranks_the_fde_pool(tmp_path, monkeypatch):
    """Beyond SCAN_TOKENS token rows the cells rank the FDE top and the probed documents."""
    path, docs = _fitted(tmp_path)
    reader = Index.open(path, mode="r")
    q = [docs[i][:5] for i in range(0, 200, 25)]
    full = reader.search(q, k=10, candidates=40)
    monkeypatch.setattr("muvera.stores.local.SCAN_TOKENS", 10)
    wide = reader.search(q, k=10, candidates=40)
    assert (wide.ids[:, 0] == full.ids[:, 0]).mean() >= 0.9


def test_the_fde_keeps_a_part_of_the_candidates_in_a_scan_and_beyond(tmp_path, monkeypatch):
    """The re-ranked candidates start with the FDE's top 1 / SCAN_PART (scan) or top
    1 / FDE_PART (beyond SCAN_TOKENS), the rest ranked by cells."""
    path, docs = _fitted(tmp_path)
    reader = Index.open(path, mode="r")
    q = [docs[i][:5] for i in range(0, 200, 25)]
    seen = []
    original = cell_file.TokenCells.candidates

    def spy(self, queries, fde_labels, keep, *args):
        out = original(self, queries, fde_labels, keep, *args)
        seen.append((keep, fde_labels[:, :keep].copy(), out))
        return out

    monkeypatch.setattr(cell_file.TokenCells, "candidates", spy)
    for scan_tokens, keep in ((1 << 40, -(-40 // cell_file.SCAN_PART)),
                              (10, -(-40 // cell_file.FDE_PART))):  # fmt: skip
        monkeypatch.setattr("muvera.stores.local.SCAN_TOKENS", scan_tokens)
        reader.search(q, k=10, candidates=40)
        got, fde_top, out = seen.pop()
        assert got == keep and keep < 40
        np.testing.assert_array_equal(out[:, :keep], fde_top)
        assert (out[:, keep:] >= 0).all()  # the rest filled by cells


def test_a_batch_scans_its_queries_side_by_side_with_the_same_results(tmp_path, monkeypatch):
    """A batch's cell scans run on worker threads (one thread each); the candidates, and so
    the results, are those of the queries searched one by one, in any thread setting."""
    rng, docs = _corpus(5)
    queries = [docs[i][: 3 + i % 5] + 0.1 * rng.standard_normal((3 + i % 5, D)).astype(
        np.float32) for i in range(0, 60, 3)]  # fmt: skip
    with Index.create(tmp_path / "ix", FDEConfig(dimension=D), "exact") as index:
        index.add(list(range(len(docs))), docs)
    index = Index.open(tmp_path / "ix", mode="r")
    assert index.store.uses_cells
    calls = []
    real = cell_file.cell_scores

    def spy(*args, **kwargs):
        calls.append(kwargs.get("threads"))
        return real(*args, **kwargs)

    monkeypatch.setattr(cell_file, "cell_scores", spy)
    alone = [index.search([q], k=10, candidates=40) for q in queries]
    assert set(calls) == {None}  # one query: the scan may be split
    calls.clear()
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("MUVERA_NUM_THREADS", threads)
        together = index.search(queries, k=10, candidates=40)
        np.testing.assert_array_equal(together.ids, np.concatenate([r.ids for r in alone]))
        np.testing.assert_array_equal(together.scores, np.concatenate([r.scores for r in alone]))
        assert set(calls) == ({None} if threads == "1" else {1})
        calls.clear()


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("n_q", [1, 3, 31, 32, 33, 70])
def test_table_kernel_equals_the_product(variant, n_q):
    """muvera_cell_table (one thread, no BLAS) = centroids @ query.T, zero past the query's
    tokens; a bad width is refused."""
    rng = np.random.default_rng(n_q)
    centroids = rng.standard_normal((1030, 24)).astype(np.float32)  # not a multiple of 4
    query = rng.standard_normal((n_q, 24)).astype(np.float32)
    width = max(32, -(-n_q // 32) * 32)
    kernel = native.load_variant(variant)
    out = np.full((1030, width), np.nan, np.float32)
    assert kernel.cell_table(centroids, query, out) == 0
    np.testing.assert_allclose(out[:, :n_q], centroids @ query.T, rtol=1e-5, atol=1e-5)
    assert not out[:, n_q:].any()
    assert kernel.cell_table(centroids, query, np.empty((1030, width + 1), np.float32)) == -3
    if n_q > 32:
        assert kernel.cell_table(centroids, query, np.empty((1030, 32), np.float32)) == -3
    cells = Cells(centroids[:4], centroids)
    np.testing.assert_allclose(cells.table(query)[:, :n_q], centroids @ query.T, 1e-5, 1e-5)
    strided = Cells(centroids[:4], np.asfortranarray(centroids))  # not rows in place: numpy
    np.testing.assert_allclose(strided.table(query)[:, :n_q], centroids @ query.T, 1e-5, 1e-5)


@pytest.mark.parametrize("variant", RUNNABLE)
@given(
    n_cells=st.integers(1, 300), n_q=st.integers(0, 40), k=st.integers(1, 9),
    levels=st.integers(2, 1000), seed=st.integers(0, 2**16),
)  # fmt: skip
@settings(max_examples=40, deadline=None)
def test_top_cells_kernel_equals_argmax_passes(variant, n_cells, n_q, k, levels, seed):
    """muvera_cell_top = repeated argmax passes over the transposed table (ties, common
    with few distinct values, to the lower cell); a bad size is refused."""
    rng = np.random.default_rng(seed)
    width = max(32, -(-n_q // 32) * 32)
    table = rng.integers(0, levels, (n_cells, width)).astype(np.float32) / levels
    k = min(k, n_cells)
    values = table[:, :n_q].T.copy()
    want_cells = np.empty((n_q, k), np.int64)
    for j in range(k):
        want_cells[:, j] = np.argmax(values, axis=1)
        values[np.arange(n_q), want_cells[:, j]] = -np.inf
    kernel = native.load_variant(variant)
    cells, vals = np.empty((n_q, k), np.int64), np.empty((n_q, k), np.float32)
    assert kernel.cell_top(table, n_q, cells, vals) == 0
    np.testing.assert_array_equal(cells, want_cells)
    np.testing.assert_array_equal(vals, np.take_along_axis(table[:, :n_q].T, want_cells, 1))
    numpy_cells, numpy_vals = _probed_cells(table, n_q, k, None)
    np.testing.assert_array_equal(numpy_cells, cells)
    np.testing.assert_array_equal(numpy_vals, vals)
    assert kernel.cell_top(table, width + 1, np.empty((width + 1, k), np.int64),
                           np.empty((width + 1, k), np.float32)) == -3  # fmt: skip
    too_many = np.empty((n_q, n_cells + 1), np.int64)
    assert kernel.cell_top(table, n_q, too_many, np.empty(too_many.shape, np.float32)) == -3


def test_a_column_without_a_finite_value_is_probed_by_numpy():
    """A query token whose table column is all -inf (cannot come from finite centroids and
    queries, but a table is data): the kernel leaves -1, numpy picks cells as argmax."""
    table = np.zeros((5, 32), np.float32)
    table[:, 1] = -np.inf
    table[3, 0] = 2.0
    cells, vals = _probed_cells(table, 2, 2, native.load())
    assert cells.tolist() == [[3, 0], [0, 0]]  # numpy's argmax of an all -inf row: 0
    assert vals[0].tolist() == [2.0, 0.0]


def test_tables_computed_beside_the_graph_walk_give_the_same_results(tmp_path, monkeypatch):
    """A search starts its queries' cell tables on a worker thread before walking the FDE
    graph and uses them: the same results as tables computed in place, in both modes."""
    path, docs = _fitted(tmp_path)
    reader = Index.open(path, mode="r")
    q = [docs[i][:5] for i in range(0, 200, 25)]
    started = []
    original = cell_file.TokenCells.start_tables

    def spy(self, queries):
        future = original(self, queries)
        started.append(future)
        return future

    for scan_tokens in (1 << 40, 10):
        monkeypatch.setattr("muvera.stores.local.SCAN_TOKENS", scan_tokens)
        monkeypatch.setattr(cell_file.TokenCells, "start_tables", spy)
        beside = reader.search(q, k=10, candidates=40)
        assert len(started) == 1 and len(started.pop().result()) == len(q)
        monkeypatch.setattr(cell_file.TokenCells, "start_tables", lambda self, queries: None)
        in_place = reader.search(q, k=10, candidates=40)
        np.testing.assert_array_equal(beside.ids, in_place.ids)
        np.testing.assert_array_equal(beside.scores, in_place.scores)
