"""Graph segments of the hnswlib store (muvera/stores/hnsw_parts.py): a commit writes only
the rows it adds, deletes write no graph file, segments fold into the main graph, and
searches over them find what one graph would."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import format_version, ragged

from muvera import FDEConfig, Index, MuveraError, native
from muvera.stores import hnsw_parts
from muvera.stores.hnsw_parts import FOLD_RATIO, MAX_SEGMENTS, merge_top, plan_commit

pytest.importorskip("hnswlib")
D = 8
CONFIG = FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=2, seed=3)


def _docs(seed, n):
    rng = np.random.default_rng(seed)
    return ragged(rng, rng.integers(2, 9, n), D)


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _entry(path):
    return _manifest(path)["store"]["entry"]


def _graph_files(path):
    entry = _entry(path)
    return [entry["file"]] + [s["file"] for s in entry.get("segments", [])]


def _fde_top(index, queries, k):
    """Brute-force FDE top ``k`` ids of the live documents (float32 inner products)."""
    labels = np.flatnonzero(index.records.alive)
    ids = np.asarray([index.records.label_ids[label] for label in labels])
    docs = [index.store.tokens(int(label)) for label in labels]
    scores = index.encoder.encode_queries(queries) @ index.encoder.encode_documents(docs).T
    return [set(ids[np.argsort(-row)[:k]].tolist()) for row in scores]


def _codes_files(path):
    entry = _entry(path)
    return [entry["codes_file"]] + [s["codes_file"] for s in entry.get("segments", [])]


def _recall(got, want):
    """Share of the brute-force top found (HNSW is approximate, its build multi-threaded)."""
    return np.mean([len(set(row.tolist()) & w) / len(w) for row, w in zip(got, want, strict=True)])


@pytest.fixture
def grown(tmp_path):
    """A main graph of 200 documents and three commits of 10 after it."""
    return _grow(tmp_path)


@pytest.fixture
def grown_vectors(tmp_path):
    """``grown`` with hnswlib's vectors in the graph files (quantization "none" reads them)."""
    return _grow(tmp_path, graph_vectors=True)


def _grow(tmp_path, **options):
    path = tmp_path / "ix"
    docs = _docs(0, 230)
    with Index.create(path, CONFIG, store_options=options or None) as index:
        index.add(list(range(200)), docs[:200])
        for start in (200, 210, 220):
            index.add(list(range(start, start + 10)), docs[start : start + 10])
    return path, docs


def test_a_commit_writes_only_the_rows_it_adds(grown):
    path, docs = grown
    entry = _entry(path)
    assert entry["count"] == 200 and [s["count"] for s in entry["segments"]] == [10, 10, 10]
    main = path / entry["file"]
    before = (main.stat().st_mtime_ns, main.read_bytes())
    codes = {name: (path / name).read_bytes() for name in _codes_files(path)}
    sizes = [(path / s["file"]).stat().st_size for s in entry["segments"]]
    assert max(sizes) < main.stat().st_size / 10  # a tenth of the rows: less than a tenth
    with Index.open(path) as index:
        index.add([300], [docs[0]])
        index.delete([3, 205])  # no graph file written for deletes
        assert _graph_files(path)[:4] == [entry["file"]] + [s["file"] for s in entry["segments"]]
        assert len(_graph_files(path)) == 5
        # the writer searches the persisted codes' map, not a copy of its own
        assert not any(g.codes.flags.writeable for g in index.store.graphs)
    assert (main.stat().st_mtime_ns, main.read_bytes()) == before
    assert {name: (path / name).read_bytes() for name in codes} == codes  # never rewritten
    assert len(_codes_files(path)) == 5
    assert _manifest(path)["format_version"] == format_version(_manifest(path), 7)
    assert _entry(path)["unmarked"] == 2


def test_segments_fold_into_the_main_graph(grown):
    path, docs = grown
    queries = [d[:3] for d in docs[::23]]
    with Index.open(path) as index:
        index.delete([7, 215])
        index.add(list(range(400, 430)), _docs(1, 30))  # 30 + 30 >= FOLD_RATIO * 200
        assert index.store.segments == 0 and len(index.store._graph) == 260
        assert index.store._graph.deleted.sum() == 2 and "unmarked" not in _entry(path)
    assert len(_codes_files(path)) == 1 and len(list(path.glob("*.codes"))) <= 5  # retiring
    reader = Index.open(path, mode="r")
    after = reader.search(queries, k=5, rerank=False).ids
    assert _recall(after, _fde_top(reader, queries, 5)) >= 0.95
    graph = reader.store._graph
    from muvera.stores.hnsw_graph import quantize_rows

    want, _ = quantize_rows(graph.vectors(np.arange(len(graph))))
    np.testing.assert_array_equal(graph.codes, want)


@pytest.mark.parametrize("threads", [1, 2, -1])
def test_persisted_codes_match_the_rows_after_merges_and_folds(tmp_path, monkeypatch, threads):
    """Segments of hundreds of rows merged and folded, their rows inserted on ``threads``
    threads (hnswlib numbers them in the order its threads reach them): every graph's codes
    file holds the codes of its own rows, in its order; a fold copies the codes of the
    graph file it loads and quantizes only the rows it inserts."""
    from muvera.stores import hnsw_codes
    from muvera.stores.hnsw_graph import quantize_rows

    if native.load() is None:
        pytest.skip("the int8 walk needs the kernels")
    quantized = []

    def counting(rows):
        quantized.append(len(rows))
        return quantize_rows(rows)

    monkeypatch.setattr(hnsw_codes, "quantize_rows", counting)
    inserted = []
    import hnswlib

    add_items = hnswlib.Index.add_items

    def spy(self, data, ids=None, num_threads=-1, replace_deleted=False):
        inserted.append((len(data), num_threads))
        return add_items(self, data, ids, num_threads, replace_deleted)

    monkeypatch.setattr(hnswlib.Index, "add_items", spy)
    path = tmp_path / "ix"
    docs = _docs(7, 10100)
    with Index.create(path, CONFIG, store_options={"num_threads": threads}) as index:
        index.add(list(range(8000)), docs[:8000])
        index.add(list(range(8000, 8500)), docs[8000:8500])  # a segment
        quantized.clear(), inserted.clear()
        index.add(list(range(8500, 10100)), docs[8500:])  # a fold: 500 + 1600 re-inserted
        assert index.store.segments == 0 and len(index.store._graph) == 10100
        assert sum(quantized) == 2100  # the main graph's 8,000 rows: copied
        assert {t for _, t in inserted} == {threads} and sum(n for n, _ in inserted) == 2100
        for graph in index.store.graphs:
            assert not graph.codes.flags.writeable
            want, meta = quantize_rows(graph.vectors(np.arange(len(graph))))
            np.testing.assert_array_equal(graph.codes, want)
            np.testing.assert_array_equal(graph.meta, meta)
        query = [docs[9000][:4]]
        assert 9000 in index.search(query, k=5).ids[0]
    reader = Index.open(path, mode="r")
    for graph in reader.store.graphs:
        want, _ = quantize_rows(graph.vectors(np.arange(len(graph))))
        np.testing.assert_array_equal(graph.codes, want)


@pytest.mark.parametrize("mode", ["int8", "none", "no-kernel"])
def test_search_over_segments_finds_the_fde_top(tmp_path, monkeypatch, mode):
    if mode == "no-kernel":
        monkeypatch.setattr(native, "load", lambda: None)
    elif native.load() is None:
        pytest.skip("the int8 walk needs the kernels")
    options = {"quantization": "none"} if mode == "none" else None
    path = tmp_path / "ix"
    docs = _docs(2, 300)
    queries = [d[:3] for d in docs[::17]]
    with Index.create(path, CONFIG, store_options=options) as index:
        index.add(list(range(240)), docs[:240])
        for start in range(240, 288, 12):  # 48 rows: less than FOLD_RATIO of 240
            index.add(list(range(start, start + 12)), docs[start : start + 12])
        index.delete([1, 250, 287])
        assert index.store.segments == 4
        want = _fde_top(index, queries, 5)
        got = index.search(queries, k=5, rerank=False).ids
        assert _recall(got, want) >= 0.95
        index.add([500], [docs[0]])  # an uncommitted row is scanned as well
    reader = Index.open(path, mode="r")
    got = reader.search(queries, k=5, rerank=False).ids
    assert _recall(got, _fde_top(reader, queries, 5)) >= 0.95
    assert not {1, 250, 287} & set(got.ravel().tolist())


def test_the_writer_searches_rows_before_their_commit(tmp_path):
    path = tmp_path / "ix"
    docs = _docs(3, 120)
    with Index.create(path, CONFIG) as index:
        index.add(list(range(100)), docs[:100])
        with index.bulk():
            index.add(list(range(100, 120)), docs[100:])
            hits = index.search([docs[110]], k=1)
            assert hits.ids[0, 0] == 110
            index.delete([110])
            assert 110 not in index.search([docs[110]], k=5).ids


def test_a_reader_keeps_its_generation_through_a_fold(grown):
    path, docs = grown
    reader = Index.open(path, mode="r")
    queries = [d[:3] for d in docs[:40:4]]
    before = reader.search(queries, k=5)
    with Index.open(path) as index:
        index.add(list(range(600, 660)), _docs(4, 60))  # folds; old files retired later
    np.testing.assert_array_equal(reader.search(queries, k=5).ids, before.ids)
    reader.refresh()
    assert reader.store.segments == 0 and len(reader) == 290


def test_many_small_commits_merge_their_segments_not_the_main_graph(tmp_path):
    path = tmp_path / "ix"
    docs = _docs(5, 1000)
    with Index.create(path, CONFIG) as index:
        index.add(list(range(900)), docs[:900])
        main = _entry(path)["file"]
        seen = []
        for i in range(900, 900 + 2 * (MAX_SEGMENTS + 1)):
            index.add([i], [docs[i]])
            seen.append([s["count"] for s in _entry(path).get("segments", [])])
        assert _entry(path)["file"] == main  # never rewritten
        queries = [d[:3] for d in docs[900 : 900 + 2 * (MAX_SEGMENTS + 1)]]
        got = index.search(queries, k=1).ids[:, 0].tolist()
        assert got == list(range(900, 900 + 2 * (MAX_SEGMENTS + 1)))
    assert seen[MAX_SEGMENTS - 1] == [1] * MAX_SEGMENTS
    assert seen[MAX_SEGMENTS] == [MAX_SEGMENTS + 1]  # merged into one segment
    assert seen[-2:] == [[2 * MAX_SEGMENTS + 1], [2 * MAX_SEGMENTS + 1, 1]]  # the oldest grows
    reader = Index.open(path, mode="r")
    assert reader.store.code_rows == len(reader)
    from muvera.stores.hnsw_graph import quantize_rows

    for graph in reader.store.graphs:  # the merged segments' rows, in their new order
        np.testing.assert_array_equal(
            graph.codes, quantize_rows(graph.vectors(np.arange(len(graph))))[0]
        )


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ("x", "segments section is malformed"),
        ([{"file": "../hnsw-000001.bin", "count": 1}], "not a file name"),
        ([{"file": "tokens.bin", "count": 10}], "not hnsw-<gen>.bin"),
        ([{"file": "hnsw-000002.bin", "count": 0}], "rows"),
        ([{"file": "hnsw-000002.bin", "count": True}], "rows"),
        ([{"file": "hnsw-000002.bin", "count": "10"}], "rows"),
        ([{"file": "hnsw-000002.bin", "count": 11}], "the manifest says 11"),
        ([{"file": "hnsw-000099.bin", "count": 10}], "hnsw-000099.bin"),
        ([{"file": "hnsw-000002.bin", "count": 10}] * 2, "listed twice"),
        ([{"file": "hnsw-000001.bin", "count": 200}], "listed as a segment"),
    ],
)
def test_bad_segment_sections_raise(grown, segments, message):
    path = grown[0]
    manifest = _manifest(path)
    entry = manifest["store"]["entry"]
    entry["segments"] = segments
    (path / "manifest.json").write_text(json.dumps(manifest))
    if isinstance(segments, list) and segments[0]["file"] == "hnsw-000002.bin":
        assert (path / "hnsw-000002.bin").is_file()
    with pytest.raises(MuveraError, match=message):
        Index.open(path, mode="r")


def test_a_truncated_segment_file_raises(grown):
    path = grown[0]
    name = _entry(path)["segments"][-1]["file"]
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(MuveraError):
        Index.open(path, mode="r")
    (path / name).unlink()
    with pytest.raises(MuveraError):
        Index.open(path, mode="r")


def test_commit_plan_and_merge():
    assert plan_commit(0, [], 1) == "fold"
    assert plan_commit(1000, [], int(FOLD_RATIO * 1000) - 1) == "segment"
    assert plan_commit(1000, [], int(FOLD_RATIO * 1000)) == "fold"
    assert plan_commit(1000, [1] * MAX_SEGMENTS, 1) == "merge"
    assert plan_commit(1000, [1] * (MAX_SEGMENTS - 1), 1) == "segment"
    labels, _ = merge_top(
        [(np.array([[1, 2], [3, -1]]), np.array([[0.5, 0.1], [0.2, -np.inf]], np.float32)),
         (np.array([[4, -1], [5, 6]]), np.array([[0.3, -np.inf], [0.9, 0.8]], np.float32))],
        3,
    )  # fmt: skip
    assert labels.tolist() == [[1, 4, 2], [5, 6, 3]]
    assert hnsw_parts.parse_segments(None) == []


def test_row_counts_are_checked_when_hnswlib_reads_the_files(grown_vectors):
    path = grown_vectors[0]
    manifest = _manifest(path)
    entry = manifest["store"]["entry"]
    entry["quantization"] = "none"
    entry["segments"][0]["count"] = 9
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MuveraError, match="the manifest says 9"):
        Index.open(path, mode="r")


def test_fold_reads_graph_files_it_cannot_parse_through_hnswlib(grown_vectors, monkeypatch):
    """quantization "none": the parts live in hnswlib; a fold takes their rows from it."""
    path, docs = grown_vectors
    manifest = _manifest(path)
    manifest["store"]["entry"]["quantization"] = "none"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with Index.open(path) as index:
        assert index.store.hnswlib_loaded and index.store.segments == 3
        index.add(list(range(700, 740)), _docs(6, 40))
        assert index.store.segments == 0 and len(index) == 270
    reader = Index.open(path, mode="r")
    assert reader.search([docs[205]], k=1).ids[0, 0] == 205
    assert os.path.isfile(path / _entry(path)["file"])


def test_info_counts_the_segments(grown):
    from muvera.index.info import describe

    params = describe(Index.open(grown[0], mode="r"))["store_parameters"]
    assert params["segments"] == {"files": 3, "rows": 30} and params["count"] == 200


@pytest.mark.parametrize("graph_vectors", [False, True])
def test_a_commit_writes_graphs_of_at_most_the_sealed_size_and_keeps_sealed_ones(
    tmp_path, monkeypatch, graph_vectors
):
    """With a graph size of 64 rows (SEAL_BYTES small): one bulk of 150 documents is
    written as graphs of 64, 64 and 22 rows, one commit after the other; full graphs are
    never rewritten by later commits; searches find what one graph would; a reader and a
    fresh writer read them back."""
    fde_dims = Index.create(tmp_path / "probe", CONFIG).encoder.output_dimension
    monkeypatch.setattr(hnsw_parts, "SEAL_BYTES", 64 * 4 * fde_dims)
    assert hnsw_parts.seal_rows(fde_dims) == 64
    docs = _docs(4, 260)
    path = tmp_path / "ix"
    options = {"graph_vectors": graph_vectors}
    with Index.create(path, CONFIG, store_options=options) as index:
        with index.bulk():
            index.add(list(range(150)), docs[:150])
        entry = _entry(path)
        assert [entry["count"]] + [s["count"] for s in entry["segments"]] == [64, 64, 22]
        sealed = _graph_files(path)[:2]
        assert len(set(_graph_files(path))) == 3 and all(os.path.isfile(path / f)
                                                           for f in _graph_files(path))  # fmt: skip
        for start in range(150, 260, 10):  # commits of 10: the 22-row graph grows, folds
            index.add(list(range(start, start + 10)), docs[start : start + 10])
            assert _graph_files(path)[:2] == sealed
        counts = [_entry(path)["count"]] + [s["count"] for s in _entry(path)["segments"]]
        assert sum(counts) == 260 and counts[:2] == [64, 64]
        assert max(counts[2:]) <= 64 + 10  # a fold of the unsealed rows: 64 + one commit
        queries = [docs[i][:3] for i in range(0, 260, 13)]
        got = index.search(queries, k=5, rerank=False).ids
        assert _recall(got, _fde_top(index, queries, 5)) >= 0.9
    with Index.open(path, mode="r") as reader:
        assert len(reader) == 260
        np.testing.assert_array_equal(reader.search(queries, k=5, rerank=False).ids, got)
    with Index.open(path) as writer:  # a fold of everything unsealed keeps the sealed ones
        writer.delete([3, 70])
        writer.add([999], [docs[0]])
        assert _graph_files(path)[:2] == sealed
        assert 3 not in writer.search([docs[3]], k=5, rerank=False).ids[0]
