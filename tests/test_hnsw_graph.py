"""The int8 search over hnswlib's graph (muvera/_hnsw_graph.py + muvera_graph_search) and the
hnswlib store that uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import native_kernel_available, ragged

from muvera import FDEConfig, Index, MuveraError, native
from muvera.stores import HnswStore
from muvera.stores.hnsw_graph import (
    HEADER,
    LINKS_HEADER,
    QuantizedGraph,
    quantize_rows,
    read_header,
)

hnswlib = pytest.importorskip("hnswlib")
needs_native = pytest.mark.skipif(not native_kernel_available(), reason="compiled kernel not built")
ROOT = Path(__file__).resolve().parents[1]


def _integer_rows(rng, n, d):
    """Rows that int8 codes hold exactly: integers in [-127, 127], each reaching 127."""
    x = rng.integers(-127, 128, size=(n, d)).astype(np.float32)
    x[np.arange(n), rng.integers(0, d, n)] = 127.0
    return x


def _hnsw_file(tmp_path, data, M=8, deleted=(), name="g.bin"):
    index = hnswlib.Index(space="ip", dim=data.shape[1])
    index.init_index(max_elements=len(data), ef_construction=100, M=M, random_seed=1)
    index.add_items(data, np.arange(len(data)) * 10 + 3, num_threads=1)  # labels != rows
    for label in deleted:
        index.mark_deleted(label)
    index.save_index(str(tmp_path / name))
    return index, tmp_path / name


def _search(graph, queries, k, ef):
    rows, scores = graph.search(native.load(), queries, k, ef, 1)
    labels = np.where(rows >= 0, graph.labels[np.maximum(rows, 0)], -1)
    return labels, scores


def test_quantize_rows_round_trip_and_edges():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 33)).astype(np.float32) * rng.uniform(0.01, 100, (50, 1))
    x[7] = 0.0
    codes, meta = quantize_rows(x)
    assert codes.dtype == np.int8 and meta.dtype == np.float32 and meta.shape == (50, 2)
    assert np.abs(codes).max() == 127 and codes.min() >= -127
    recon = codes * meta[:, :1]
    assert (np.abs(recon - x) <= meta[:, :1] / 2 + 1e-6 * np.abs(x).max(1, keepdims=True)).all()
    np.testing.assert_array_equal(meta[:, 1], codes.sum(axis=1))
    assert (codes[7] == 0).all() and meta[7, 0] == 0
    exact = _integer_rows(rng, 5, 9)
    codes, meta = quantize_rows(exact)
    np.testing.assert_array_equal(codes, exact)
    np.testing.assert_array_equal(meta[:, 0], 1.0)


def test_read_header_rejects_other_layouts(tmp_path):
    rng = np.random.default_rng(1)
    _, path = _hnsw_file(tmp_path, rng.standard_normal((40, 12)).astype(np.float32))
    data = path.read_bytes()
    assert read_header(data, 12) is not None
    assert read_header(data, 13) is None  # another dimension
    assert read_header(data[:50], 12) is None  # truncated header
    assert read_header(data[: len(data) // 2], 12) is None  # truncated records
    fields = list(HEADER.unpack_from(data, 0))
    fields[0] = 8  # offsetLevel0 of some other layout
    assert read_header(HEADER.pack(*fields) + data[HEADER.size :], 12) is None
    (tmp_path / "empty.bin").write_bytes(b"")
    assert QuantizedGraph.read(tmp_path / "empty.bin", 12) is None
    (tmp_path / "bad.bin").write_bytes(HEADER.pack(*fields) + data[HEADER.size :])
    assert QuantizedGraph.read(tmp_path / "bad.bin", 12) is None
    assert QuantizedGraph.read(path, 70_000) is None  # wider than int32 sums allow


@needs_native
@pytest.mark.parametrize("deleted", [(), (3, 53, 103, 503, 1003)])
def test_walk_equals_hnswlib_on_exactly_quantized_rows(tmp_path, deleted):
    """With rows (and queries) that int8 holds exactly, the scores are exact integers, so
    the walk must visit what hnswlib visits and return what it returns, deleted rows
    included (walked through, never returned)."""
    rng = np.random.default_rng(2)
    data = _integer_rows(rng, 400, 24)
    index, path = _hnsw_file(tmp_path, data, deleted=deleted)
    graph = QuantizedGraph.read(path, 24)
    assert graph is not None and len(graph) == 400
    assert graph.has_deleted == bool(deleted)
    np.testing.assert_array_equal(graph.labels, np.arange(400) * 10 + 3)
    queries = _integer_rows(rng, 30, 24)
    for k, ef in ((1, 1), (10, 10), (10, 40), (50, 60)):
        index.set_ef(ef)
        want_labels, want_dist = index.knn_query(queries, k=k, num_threads=1)
        labels, scores = _search(graph, queries, k, ef)
        np.testing.assert_array_equal(scores, (1.0 - want_dist).astype(np.float32))
        same = (labels == want_labels).mean()
        assert same > 0.98, same  # order may differ only between equal scores
        assert not np.isin(labels, deleted).any()


@needs_native
def test_one_query_with_a_helper_thread_walks_the_same(tmp_path):
    """A single query searched with 2+ threads (a helper scores half of each step's
    neighbours) returns exactly what one thread returns."""
    rng = np.random.default_rng(13)
    data = rng.standard_normal((800, 40)).astype(np.float32)
    _, path = _hnsw_file(tmp_path, data, M=16, deleted=(3, 33))
    graph = QuantizedGraph.read(path, 40)
    queries = rng.standard_normal((25, 40)).astype(np.float32)
    kernel = native.load()
    one_thread = graph.search(kernel, queries, 30, 50, 1)
    for threads in (2, 3):
        for i in range(len(queries)):
            rows, scores = graph.search(kernel, queries[i : i + 1], 30, 50, threads)
            np.testing.assert_array_equal(rows[0], one_thread[0][i])
            np.testing.assert_array_equal(scores[0], one_thread[1][i])


@needs_native
def test_recall_close_to_hnswlib_on_float_rows(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.standard_normal((1500, 96)).astype(np.float32)
    index, path = _hnsw_file(tmp_path, data, M=12)
    graph = QuantizedGraph.read(path, 96)
    queries = rng.standard_normal((50, 96)).astype(np.float32)
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :20] * 10 + 3
    index.set_ef(60)
    theirs = index.knn_query(queries, k=20, num_threads=1)[0]
    ours, scores = _search(graph, queries, 20, 60)

    def recall(found):
        return np.mean([len(set(a) & set(b)) / 20 for a, b in zip(found, truth, strict=True)])

    recall_ours, recall_hnswlib = recall(ours), recall(theirs)
    assert recall_ours >= recall_hnswlib - 0.03, (recall_ours, recall_hnswlib)
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    # approximate scores: within the int8 rounding of the float inner products
    exact = np.take_along_axis(queries @ data.T, (ours - 3) // 10, axis=1)
    np.testing.assert_allclose(scores, exact, rtol=0.05, atol=0.3)


@needs_native
def test_fewer_results_than_k_and_empty_graph(tmp_path):
    rng = np.random.default_rng(4)
    data = rng.standard_normal((6, 8)).astype(np.float32)
    _, path = _hnsw_file(tmp_path, data, deleted=(3, 13))
    graph = QuantizedGraph.read(path, 8)
    labels, scores = _search(graph, data[:2], 10, 10)
    assert (labels[:, :4] >= 0).all() and (labels[:, 4:] == -1).all()
    assert np.isneginf(scores[:, 4:]).all()
    assert sorted(labels[0, :4].tolist()) == [23, 33, 43, 53]


@needs_native
def test_rows_are_requantized_only_when_new(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    data = rng.standard_normal((300, 20)).astype(np.float32)
    index, path = _hnsw_file(tmp_path, data[:200])
    first = QuantizedGraph.read(path, 20)
    index.resize_index(300)
    index.add_items(data[200:], np.arange(200, 300) * 10 + 3)
    index.mark_deleted(13)
    index.save_index(str(tmp_path / "g2.bin"))
    seen = []
    real = quantize_rows
    monkeypatch.setattr(
        "muvera.stores.hnsw_graph.quantize_rows", lambda rows: seen.append(len(rows)) or real(rows)
    )
    second = QuantizedGraph.read(tmp_path / "g2.bin", 20, previous=first)
    assert sum(seen) == 100 and len(second) == 300
    fresh_codes, fresh_meta = real(second.vectors(np.arange(300)))
    np.testing.assert_array_equal(second.codes, fresh_codes)
    np.testing.assert_array_equal(second.meta, fresh_meta)
    assert second.deleted[1] == 1 and second.has_deleted
    # the second read made room for twice the rows it kept: a third one fills it in place
    assert second._code_buffer.shape[0] == 400
    index.resize_index(350)
    index.add_items(rng.standard_normal((50, 20)).astype(np.float32), np.arange(300, 350) * 10 + 3)
    index.save_index(str(tmp_path / "g3.bin"))
    third = QuantizedGraph.read(tmp_path / "g3.bin", 20, previous=second)
    assert np.shares_memory(third.codes, second.codes) and sum(seen) == 150
    np.testing.assert_array_equal(third.codes[:300], fresh_codes)
    np.testing.assert_array_equal(third.codes, real(third.vectors(np.arange(350)))[0])


# -- the store --------------------------------------------------------------------------


def _index(tmp_path, **options):
    return Index.create(
        tmp_path / "ix",
        FDEConfig(dimension=8, num_repetitions=4, num_simhash_projections=3),
        store_options=options or None,
    )


def _docs(rng, n):
    return ragged(rng, rng.integers(2, 9, n), 8)  # unit tokens: a document is its own best match


@needs_native
def test_store_searches_codes_loads_hnswlib_only_to_write(tmp_path):
    rng = np.random.default_rng(7)
    docs = _docs(rng, 80)
    with _index(tmp_path) as index:
        index.add(list(range(60)), docs[:60])
        assert index.store.quantized and index.store.params()["quantization"] == "int8"
        queries = [d[:2] for d in docs[:5]]
        before = index.search(queries, k=5, candidates=60)
    reader = Index.open(tmp_path / "ix", mode="r")
    assert not reader.store.hnswlib_loaded and reader.store.quantized  # hnswlib never loaded
    after = reader.search(queries, k=5, candidates=60)
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_array_equal(before.scores, after.scores)
    with Index.open(tmp_path / "ix") as writer:
        writer.update_metadata({"a": 1})  # a commit without changing the graph
        assert not writer.store.hnswlib_loaded
        file = writer.manifest["store"]["entry"]["file"]
        assert (tmp_path / "ix" / file).is_file()
        writer.add(list(range(60, 80)), docs[60:])  # folded into a new main graph
        assert writer.manifest["store"]["entry"]["file"] != file
        assert not writer.store.hnswlib_loaded and writer.store.quantized  # released
        writer.delete([0, 1])
        got = writer.search([docs[0][:2], docs[70]], k=3, candidates=79)
        assert 0 not in got.ids[0] and got.ids[1, 0] == 70
        assert len(writer.store._graph) == 80 and writer.store._graph.has_deleted


@needs_native
def test_one_query_walks_without_a_helper_unless_asked(tmp_path, monkeypatch):
    """The walk's threads: one for a single query (a helper thread only when num_threads
    >= 2 asks for it), every CPU (or num_threads) for a batch; the results never change."""
    rng = np.random.default_rng(3)
    docs = _docs(rng, 60)
    with _index(tmp_path) as index:
        index.add(list(range(60)), docs)
    monkeypatch.setenv("MUVERA_NUM_THREADS", "4")
    seen = []
    results = {}
    for num_threads in (-1, 1, 2):
        options = {"num_threads": num_threads}
        reader = Index.open(tmp_path / "ix", mode="r", store_options=options)
        graph = reader.store.graphs[0]
        real = graph.search

        def spy(kernel, queries, k, ef, threads, excluded, real=real, asked=num_threads):
            seen.append((asked, queries.shape[0], threads))
            return real(kernel, queries, k, ef, threads, excluded)

        monkeypatch.setattr(graph, "search", spy)
        one = reader.search([docs[5]], k=5, candidates=20)
        batch = reader.search([docs[5], docs[9]], k=5, candidates=20)
        results[num_threads] = (one.ids, batch.ids)
    assert seen == [(-1, 1, 1), (-1, 2, 4), (1, 1, 1), (1, 2, 1), (2, 1, 2), (2, 2, 2)]
    for ids in results.values():
        np.testing.assert_array_equal(ids[0], results[-1][0])
        np.testing.assert_array_equal(ids[1], results[-1][1])
    with pytest.raises(MuveraError, match="num_threads must be an int"):
        Index.open(tmp_path / "ix", mode="r", store_options={"num_threads": "2"})
    with pytest.raises(MuveraError, match="cannot be changed"):
        Index.open(tmp_path / "ix", mode="r", store_options={"M": 4})


@needs_native
def test_store_fde_only_scores_are_float32_inner_products(tmp_path):
    rng = np.random.default_rng(8)
    docs = _docs(rng, 50)
    with _index(tmp_path, graph_vectors=True) as index:
        index.add(list(range(50)), docs)
        queries = [d[:3] for d in docs[:6]]
        got = index.search(queries, k=7, rerank=False)
        enc = index.encoder
        fde = enc.encode_queries(queries) @ enc.encode_documents(docs).T
        want = np.take_along_axis(fde, got.ids.astype(np.int64), axis=1)
        np.testing.assert_allclose(got.scores, want, rtol=1e-5, atol=1e-5)
        _, approx = index.store._candidates(enc.encode_queries(queries), 7, exact=False)
        assert not np.array_equal(approx, got.scores)  # int8 scores when asked for


def test_store_quantization_option(tmp_path):
    rng = np.random.default_rng(9)
    docs = _docs(rng, 30)
    with _index(tmp_path, quantization="none") as index:
        index.add(list(range(30)), docs)
        assert not index.store.quantized
        ids = index.search([docs[4]], k=3).ids
        assert ids[0, 0] == 4
    reader = Index.open(tmp_path / "ix", mode="r")
    assert reader.store.quantization == "none" and reader.store.hnswlib_loaded
    np.testing.assert_array_equal(reader.search([docs[4]], k=3).ids, ids)
    with pytest.raises(MuveraError, match="quantization must be one of"):
        Index.create(tmp_path / "bad", FDEConfig(dimension=8), store_options={"quantization": "pq"})


def test_store_without_the_kernel_uses_hnswlib(tmp_path, monkeypatch):
    monkeypatch.setattr(native, "load", lambda: None)
    rng = np.random.default_rng(10)
    docs = _docs(rng, 30)
    with _index(tmp_path) as index:
        index.add(list(range(30)), docs)
        assert not index.store.quantized
        assert index.search([docs[9]], k=2).ids[0, 0] == 9


@needs_native
def test_store_refuses_a_file_layout_it_cannot_check(tmp_path, monkeypatch):
    """A graph file whose layout this package cannot check is not handed to hnswlib either
    (its loader and search trust the file: a damaged one can crash the process)."""
    rng = np.random.default_rng(11)
    docs = _docs(rng, 30)
    with _index(tmp_path, graph_vectors=True) as index:
        index.add(list(range(30)), docs)
    with _index(tmp_path / "links") as index:  # no vectors: nothing for hnswlib to load
        index.add(list(range(30)), docs)
    monkeypatch.setattr("muvera.stores.hnsw_graph.read_header", lambda *args, **kw: None)
    with pytest.raises(MuveraError, match="not an hnswlib index"):
        Index.open(tmp_path / "ix", mode="r")
    with pytest.raises(MuveraError, match="a links file in a layout this muvera does not read"):
        Index.open(tmp_path / "links" / "ix", mode="r")


@pytest.mark.parametrize("graph_vectors", [True, False])
def test_hnswlib_never_loads_links_to_missing_rows(tmp_path, graph_vectors):
    """The writer loads the file into hnswlib (a links file: written back with its codes'
    vectors), whose search follows neighbour ids without checking them: an id past the
    rows is refused first (the int8 walk skips such ids)."""
    rng = np.random.default_rng(13)
    docs = _docs(rng, 30)
    with _index(tmp_path, graph_vectors=graph_vectors) as index:
        index.add(list(range(30)), docs)
        dimension = index.encoder.output_dimension
    path = tmp_path / "ix"
    graph_file = next(path.glob("hnsw-*.bin"))
    links = not graph_vectors
    assert read_header(graph_file.read_bytes(), dimension, links=links) is not None
    data = bytearray(graph_file.read_bytes())
    first_link = (LINKS_HEADER.size if links else 0) + HEADER.size + 4  # row 0's list's ids
    data[first_link : first_link + 4] = (10**6).to_bytes(4, "little")
    graph_file.write_bytes(bytes(data))
    writer = Index.open(path)  # the int8 walk reads the file: it skips such ids
    writer.add([99], [docs[0]])  # a segment of its own: the main graph is not loaded
    with pytest.raises(MuveraError, match="not there"):
        writer.add(list(range(100, 110)), docs[:10])  # hnswlib loads it to fold: refused
    writer.close()


@needs_native
def test_search_between_a_write_and_its_commit_scans_the_new_rows(tmp_path):
    rng = np.random.default_rng(12)
    tokens = {"file": "tokens.bin", "dtype": "float32", "bytes": 0}
    store = HnswStore(tmp_path, 16, 16, tokens, {})
    data = rng.standard_normal((50, 16)).astype(np.float32)
    store._add_fdes(np.arange(50), data)
    store._live = np.ones(50, bool)  # as LocalStore.add keeps it
    assert not store.quantized  # nothing saved yet
    labels, _ = store._candidates(data[:3], 1)
    np.testing.assert_array_equal(labels[:, 0], [0, 1, 2])
    store.save(tmp_path, 1)
    assert store.quantized
    more = rng.standard_normal((10, 16)).astype(np.float32)
    store._add_fdes(np.arange(50, 60), more)
    store._live = np.ones(60, bool)  # as LocalStore.add keeps it
    labels, scores = store._candidates(more[:3], 1)  # scanned exactly, before the commit
    np.testing.assert_array_equal(labels[:, 0], [50, 51, 52])
    np.testing.assert_allclose(scores[:, 0], (more[:3] ** 2).sum(axis=1), rtol=1e-5)
    store.save(tmp_path, 2)
    assert store.quantized and len(store._graph) == 50 and store.segments == 1
    labels, _ = store._candidates(more[:3], 1)
    np.testing.assert_array_equal(labels[:, 0], [50, 51, 52])
