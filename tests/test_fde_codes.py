"""Persisted FDE codes of the hnswlib store: one ``hnsw-<gen>.codes`` file per graph file
(muvera/stores/hnsw_codes.py), written with it, mapped by readers instead of re-quantizing
every row, never changed once written, and checked before anything reads them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import ragged

from muvera import FDEConfig, Index, MuveraError, native
from muvera.stores import hnsw_codes
from muvera.stores.hnsw_codes import CODES_HEADER, codes_size, read_codes, write_codes
from muvera.stores.hnsw_graph import QuantizedGraph, quantize_rows

pytest.importorskip("hnswlib")
pytestmark = pytest.mark.skipif(native.load() is None, reason="the int8 walk needs the kernels")
D = 8
CONFIG = FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=2)


def _docs(seed, n):
    rng = np.random.default_rng(seed)
    return ragged(rng, rng.integers(3, 9, n), D)


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _edit_entry(path, **changes):
    manifest = _manifest(path)
    manifest["store"]["entry"].update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def built(tmp_path):
    """300 documents: a main graph of 200, then a commit of 100 (a fold: one main graph),
    in graph files with their vectors (the layout that can be quantized at open; without
    them, tests/test_links.py)."""
    path = tmp_path / "ix"
    docs = _docs(0, 300)
    with Index.create(path, CONFIG, store_options={"graph_vectors": True}) as index:
        index.add(list(range(200)), docs[:200])
        index.add(list(range(200, 300)), docs[200:])
        index.delete([5])
    return path, docs


def _codes_file(path):
    return path / _manifest(path)["store"]["entry"]["codes_file"]


def _check_graph_codes(graph):
    want_codes, want_meta = quantize_rows(graph.vectors(np.arange(len(graph))))
    np.testing.assert_array_equal(graph.codes, want_codes)
    np.testing.assert_array_equal(graph.meta, want_meta)


def test_codes_are_written_beside_the_graph_and_mapped_by_readers(built):
    path, docs = built
    manifest = _manifest(path)
    entry, d = manifest["store"]["entry"], manifest["fde_dimension"]
    assert entry["codes_file"] == entry["file"].replace(".bin", ".codes")
    assert "codes" not in entry and not (path / "fde-codes.bin").exists()
    assert _codes_file(path).stat().st_size == codes_size(300, d)
    reader = Index.open(path, mode="r")
    graph = reader.store._graph
    assert not graph.codes.flags.writeable  # the file's map, not a copy
    assert reader.store.code_rows == 300
    _check_graph_codes(graph)
    queries = [docs[i][:3] for i in range(0, 300, 30)]
    mapped = reader.search(queries, k=5, candidates=20)
    manifest = _manifest(path)  # the same index quantizing at open gives the same results
    del manifest["store"]["entry"]["codes_file"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    quantized = Index.open(path, mode="r")
    assert quantized.store.code_rows == 0 and quantized.store._graph.codes.flags.writeable
    again = quantized.search(queries, k=5, candidates=20)
    np.testing.assert_array_equal(mapped.ids, again.ids)
    np.testing.assert_array_equal(mapped.scores, again.scores)


def test_a_commit_writes_the_codes_of_its_own_graph_only(built):
    path, docs = built
    main = _codes_file(path)
    before = (main.stat().st_mtime_ns, main.read_bytes())
    with Index.open(path) as index:
        index.add([1000, 1001], _docs(1, 2))
        segment = index.manifest["store"]["entry"]["segments"][0]
        assert segment["codes_file"] == segment["file"].replace(".bin", ".codes")
        assert (path / segment["codes_file"]).stat().st_size == codes_size(2, index.store.dimension)
        assert index.search([docs[7][:3]], k=1).ids[0, 0] == 7
        assert not any(g.codes.flags.writeable for g in index.store.graphs)
    assert (main.stat().st_mtime_ns, main.read_bytes()) == before
    for graph in Index.open(path, mode="r").store.graphs:
        _check_graph_codes(graph)


def test_files_an_interrupted_commit_left_are_ignored_then_removed(built):
    """A writer that died after writing a graph and its codes, before its manifest."""
    path, docs = built
    (path / "hnsw-999999.codes").write_bytes(b"\x7f" * 100)
    (path / ".hnsw-999999.codes.tmp").write_bytes(b"\x01" * 10)
    assert Index.open(path, mode="r").search([docs[9][:3]], k=1).ids[0, 0] == 9
    with Index.open(path) as index:
        assert not (path / "hnsw-999999.codes").exists()
        assert not (path / ".hnsw-999999.codes.tmp").exists()
        index.add([2000], _docs(2, 1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"codes_file": "other.bin"}, "not hnsw-<gen>.codes"),
        ({"codes_file": "../hnsw-000001.codes"}, "not a file name"),
        ({"codes_file": 7}, "not a file name"),
        ({"codes_file": "hnsw-000777.codes"}, "cannot read the FDE codes hnsw-000777.codes"),
    ],
)
def test_damaged_code_entries_raise(built, change, message):
    path = built[0]
    _edit_entry(path, **change)
    with pytest.raises(MuveraError, match=message):
        Index.open(path, mode="r")


def test_a_codes_file_listed_twice_raises(built):
    path, _ = built
    with Index.open(path) as index:
        index.add([1000], _docs(1, 1))
    manifest = _manifest(path)
    entry = manifest["store"]["entry"]
    entry["segments"][0]["codes_file"] = entry["codes_file"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MuveraError, match="listed twice"):
        Index.open(path, mode="r")


def _rewrite_header(path, **fields):
    data = bytearray(path.read_bytes())
    magic, version, d, n, meta_at = CODES_HEADER.unpack_from(data, 0)
    values = {"magic": magic, "version": version, "d": d, "n": n, "meta_at": meta_at, **fields}
    CODES_HEADER.pack_into(data, 0, *values.values())
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), "bytes, codes of 300 rows"),
        (lambda p: p.write_bytes(p.read_bytes() + b"\0" * 8), "bytes, codes of 300 rows"),
        (lambda p: p.write_bytes(p.read_bytes()[:20]), "not an FDE codes file"),
        (lambda p: p.write_bytes(b""), "not an FDE codes file"),
        (lambda p: _rewrite_header(p, magic=b"MUVCODEX"), "not an FDE codes file"),
        (lambda p: _rewrite_header(p, version=2), "version 2.*upgrade muvera"),
        (lambda p: _rewrite_header(p, n=299), "codes of 299 rows"),
        (lambda p: _rewrite_header(p, d=3), "of dimension 3"),
        (lambda p: _rewrite_header(p, meta_at=40), "bytes, codes of 300"),
        (lambda p: p.unlink(), "cannot read the FDE codes"),
    ],
)
def test_damaged_code_files_raise(built, damage, message):
    path = built[0]
    damage(_codes_file(path))
    with pytest.raises(MuveraError, match=message):
        Index.open(path, mode="r")


def test_wrong_codes_search_worse_but_never_crash_and_bad_scales_raise(built):
    path, docs = built
    codes = _codes_file(path)
    data = bytearray(codes.read_bytes())
    d = _manifest(path)["fde_dimension"]
    for i in range(CODES_HEADER.size, CODES_HEADER.size + 300 * d, 7):
        data[i] ^= 0x55
    codes.write_bytes(bytes(data))  # wrong values: worse results, no crash
    hits = Index.open(path, mode="r").search([docs[0][:3]], k=5, candidates=20)
    assert hits.ids.shape == (1, 5)
    meta_at = CODES_HEADER.unpack_from(data, 0)[4]
    data[meta_at + 12 : meta_at + 16] = np.array([np.inf], "<f4").tobytes()
    codes.write_bytes(bytes(data))
    with pytest.raises(MuveraError, match="scales are not all finite"):
        Index.open(path, mode="r")


def test_no_codes_without_the_int8_walk(tmp_path):
    path = tmp_path / "ix"
    with Index.create(path, CONFIG, store_options={"quantization": "none"}) as index:
        index.add(list(range(50)), _docs(3, 50))
        index.add(list(range(50, 52)), _docs(4, 2))
    entry = _manifest(path)["store"]["entry"]
    assert "codes_file" not in entry and "codes_file" not in entry["segments"][0]
    assert not list(path.glob("*.codes"))


def test_codes_dropped_by_an_older_writer_are_written_again(built):
    """An older muvera's commit keeps no codes file names (its entry does not know them):
    the next writer that knows them writes one for every graph file again."""
    path, _ = built
    old = _codes_file(path).read_bytes()
    manifest = _manifest(path)
    del manifest["store"]["entry"]["codes_file"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with Index.open(path) as index:
        index.add([3000], _docs(4, 1))
    reader = Index.open(path, mode="r")
    assert [len(g) for g in reader.store.graphs] == [300, 1]  # the main graph and a segment
    assert reader.store.code_rows == 301
    assert _codes_file(path).read_bytes() == old  # the same rows, the same bytes
    for graph in reader.store.graphs:
        _check_graph_codes(graph)


def test_checksums_cover_the_codes_files(tmp_path):
    path = tmp_path / "ix"
    docs = _docs(5, 100)
    with Index.create(path, CONFIG, checksums=True) as index:
        index.add(list(range(90)), docs[:90])
        index.add(list(range(90, 100)), docs[90:])  # a segment and its codes file
        index.verify()
    entry = _manifest(path)["store"]["entry"]
    names = {entry["codes_file"], entry["segments"][0]["codes_file"]}
    assert names <= set(_manifest(path)["checksums"])
    target = path / entry["segments"][0]["codes_file"]
    data = bytearray(target.read_bytes())
    data[CODES_HEADER.size + 3] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(MuveraError, match=f"{target.name} is damaged"):
        Index.open(path, mode="r", verify=True)


@pytest.mark.parametrize("kept", [0, 1, 5, 16, 17, 40])
@pytest.mark.parametrize("chunk_rows", [1, 3, 64])
def test_write_codes_copies_the_kept_rows_and_quantizes_the_others(
    tmp_path, monkeypatch, kept, chunk_rows
):
    """Chunks across the kept rows' end; the kept rows' codes come from ``kept`` (here
    deliberately not the file's), the others from the file's vectors."""
    import hnswlib

    d, n = 12, 40
    monkeypatch.setattr(hnsw_codes, "_CHUNK_BYTES", chunk_rows * 4 * d)
    x = np.random.default_rng(kept).standard_normal((n, d)).astype(np.float32)
    index = hnswlib.Index(space="ip", dim=d)
    index.init_index(max_elements=n, M=4, ef_construction=20)
    index.add_items(x, np.arange(n), num_threads=1)
    index.save_index(str(tmp_path / "hnsw-000001.bin"))
    graph = QuantizedGraph.mapped(tmp_path / "hnsw-000001.bin", d)
    marker = (np.full((kept, d), 3, np.int8), np.full((kept, 2), 0.5, np.float32))
    write_codes(tmp_path / "hnsw-000001.codes", graph, marker if kept else None)
    codes, meta = read_codes(tmp_path / "hnsw-000001.codes", n, d)
    want_codes, want_meta = quantize_rows(graph.vectors(np.arange(n)))
    np.testing.assert_array_equal(codes[:kept], marker[0])
    np.testing.assert_array_equal(meta[:kept], marker[1])
    np.testing.assert_array_equal(codes[kept:], want_codes[kept:])
    np.testing.assert_array_equal(meta[kept:], want_meta[kept:])
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("new_rows", [2, 120])  # a segment, a fold
def test_a_codes_write_that_fails_keeps_the_last_commit(built, monkeypatch, new_rows):
    """The disk fills while a commit writes a codes file: the error comes out, the half
    file is gone, the writer goes on from the last commit, and so does the next one."""
    path, docs = built
    queries = [docs[i][:3] for i in range(0, 300, 50)]
    with Index.open(path) as index:
        before = index.search(queries, k=3).ids.copy()
        calls = []

        def full_disk(rows):
            calls.append(len(rows))
            raise OSError("no space left on device")

        monkeypatch.setattr(hnsw_codes, "quantize_rows", full_disk)
        new = list(range(5000, 5000 + new_rows))
        with pytest.raises(OSError, match="no space left"):
            index.add(new, _docs(9, new_rows))
        monkeypatch.undo()
        assert calls and not list(path.glob(".*.tmp"))
        assert len(index) == 299
        np.testing.assert_array_equal(index.search(queries, k=3).ids, before)
        index.add(new, _docs(9, new_rows))
        assert len(index) == 299 + new_rows
    reader = Index.open(path, mode="r")
    assert len(reader) == 299 + new_rows and reader.store.code_rows == 300 + new_rows
    for graph in reader.store.graphs:
        _check_graph_codes(graph)


def test_codes_of_a_base_whose_rows_moved_are_not_copied(built, tmp_path):
    """Defensive: if the new graph file's first rows are not the loaded file's (hnswlib
    always keeps them), every row is quantized from the new file instead."""
    from muvera.stores.hnsw_links import save_graph

    path, _ = built
    with Index.open(path) as index:
        index.add([1000, 1001], _docs(1, 2))
    store = Index.open(path, mode="r").store
    main, segment = store.graphs
    copy = tmp_path / "hnsw-000500.bin"
    index = store._load_index(store._parts[0], len(main))
    name, graph = save_graph(index, copy, segment, False, True)  # 2 rows of other labels
    assert name == "hnsw-000500.codes" and not graph.codes.flags.writeable
    _check_graph_codes(graph)
    fake = QuantizedGraph.mapped(copy, store.dimension)
    fake._quantize(
        None,
        (np.zeros((len(main), store.dimension), np.int8), np.zeros((len(main), 2), np.float32)),
    )
    save_graph(index, copy, fake, False, True)  # the same labels: its (here wrong) codes copied
    assert not read_codes(tmp_path / "hnsw-000500.codes", len(main), store.dimension)[0].any()
