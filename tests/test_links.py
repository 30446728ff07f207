"""Graph files without their vectors (muvera/stores/hnsw_links.py, the default of the
hnswlib store with int8 codes): written by every commit, searched like the graph files
with vectors, written back for hnswlib when it inserts rows (merges, folds) or searches (a
build without the compiled kernel), versioned and checked before anything trusts them."""

from __future__ import annotations

import contextlib
import json
import struct

import numpy as np
import pytest
from helpers import ragged

from muvera import FDEConfig, Index, MuveraError, native
from muvera.stores import hnsw_links
from muvera.stores.hnsw_graph import HEADER, LINKS_HEADER, LINKS_MAGIC, quantize_rows

pytest.importorskip("hnswlib")
pytestmark = pytest.mark.skipif(native.load() is None, reason="links files need the kernels")
D = 8
CONFIG = FDEConfig(dimension=D, num_repetitions=3, num_simhash_projections=3, seed=5)


def _docs(seed, n):
    rng = np.random.default_rng(seed)
    return ragged(rng, rng.integers(3, 9, n), D)


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _entry(path):
    return _manifest(path)["store"]["entry"]


def _build(path, docs, batches, **options):
    """An index of ``docs`` added in ``batches`` (sizes; a commit each), one thread."""
    with Index.create(path, CONFIG, store_options={"num_threads": 1, **options}) as index:
        start = 0
        for size in batches:
            index.add(list(range(start, start + size)), docs[start : start + size])
            start += size
    return path


def _check_codes(index, docs):
    """Every graph row's codes are those of its document's float32 FDE: the codes survive
    each write-back for hnswlib and each re-insert (quantizing a dequantized row gives its
    codes back)."""
    fdes = index.encoder.encode_documents(docs)
    for graph in index.store.graphs:
        ids = np.asarray([index.records.label_ids[int(label)] for label in graph.labels])
        codes, meta = quantize_rows(fdes[ids])
        np.testing.assert_array_equal(graph.codes, codes)
        np.testing.assert_allclose(graph.meta, meta, rtol=1e-6)


def test_a_new_index_writes_graph_files_without_vectors(tmp_path):
    docs = _docs(0, 200)
    links = _build(tmp_path / "links", docs, [200])
    full = _build(tmp_path / "full", docs, [200], graph_vectors=True)
    entry = _entry(links)
    assert entry["graph_vectors"] is False and _entry(full)["graph_vectors"] is True
    assert _manifest(links)["format_version"] == 8 and _manifest(full)["format_version"] == 1
    graph_file = links / entry["file"]
    assert graph_file.read_bytes()[:8] == LINKS_MAGIC
    dimension = _manifest(links)["fde_dimension"]
    saved = (full / _entry(full)["file"]).stat().st_size - graph_file.stat().st_size
    assert saved == LINKS_HEADER.size * -1 + 200 * 4 * dimension  # exactly the vectors
    queries = [d[:4] for d in docs[::10]]
    a, b = Index.open(links, mode="r"), Index.open(full, mode="r")
    assert a.store._graph.links_file and not b.store._graph.links_file
    # one thread builds the same graph: the same walk over the same codes
    np.testing.assert_array_equal(a.search(queries, k=5).ids, b.search(queries, k=5).ids)
    got, want = a.search(queries, k=5, rerank=False), b.search(queries, k=5, rerank=False)
    assert [set(r) for r in got.ids.tolist()] == [set(r) for r in want.ids.tolist()]
    np.testing.assert_allclose(got.scores, want.scores, rtol=0.02)  # codes vs float32 FDEs
    _check_codes(a, docs)


@pytest.mark.parametrize("threads", [1, 2])
def test_merges_and_folds_write_links_files_back_for_hnswlib(tmp_path, threads):
    """Segments, a merge (more than 8 segments) and folds: hnswlib loads each links file
    written back with its codes' vectors; nothing temporary is left behind."""
    docs = _docs(1, 330)
    path = _build(tmp_path / "ix", docs[:200], [200], num_threads=threads)
    with Index.open(path, store_options={"num_threads": threads}) as index:
        start = 200
        for _ in range(11):  # 9 segments, then a merge, then more
            index.add(list(range(start, start + 3)), docs[start : start + 3])
            start += 3
        assert index.store.segments >= 1
        index.add(list(range(start, 330)), docs[start:330])  # 97 rows: a fold
        assert index.store.segments == 0
        index.delete([7, 250])
    reader = Index.open(path, mode="r")
    assert all(g.links_file for g in reader.store.graphs)
    alive = [i for i in range(330) if i not in (7, 250)]
    _check_codes(reader, docs)
    found = reader.search([docs[i][:5] for i in alive[::7]], k=1).ids[:, 0]
    assert np.mean(found == np.asarray(alive[::7])) > 0.9
    assert not list(path.glob(".*")) or {p.name for p in path.glob(".*")} <= {".lock"}


def test_a_build_without_the_kernel_searches_and_folds_links_files(tmp_path, monkeypatch):
    """hnswlib searches (and a writer folds) the links files written back to a temporary
    file; this writer writes graph files with vectors (it has no walk), which readers
    with the kernel read beside the links files."""
    docs = _docs(2, 260)
    path = _build(tmp_path / "ix", docs, [200, 10])
    queries = [d[:5] for d in docs[:200:20]]
    with_kernel = Index.open(path, mode="r").search(queries, k=3).ids
    monkeypatch.setattr(native, "load", lambda *args, **kwargs: None)
    reader = Index.open(path, mode="r")
    assert reader.store.hnswlib_loaded and not reader.store.quantized
    np.testing.assert_array_equal(reader.search(queries, k=3).ids[:, 0], with_kernel[:, 0])
    with Index.open(path) as writer:
        writer.add(list(range(210, 260)), docs[210:])  # 60 rows of 200: a fold
    monkeypatch.undo()
    reader = Index.open(path, mode="r")
    assert [g.links_file for g in reader.store.graphs] == [False]  # written by hnswlib whole
    assert reader.search([docs[230][:5]], k=1).ids[0, 0] == 230
    with Index.open(path) as writer:  # a writer with the kernel writes links files again
        writer.add(list(range(300, 400)), _docs(3, 100))  # a fold
    assert all(g.links_file for g in Index.open(path, mode="r").store.graphs)


def test_a_failed_write_keeps_the_last_commit(tmp_path, monkeypatch):
    docs = _docs(4, 260)
    path = _build(tmp_path / "ix", docs, [200])
    before = _manifest(path)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hnsw_links, "strip_vectors", fail)
    index = Index.open(path)
    with pytest.raises(OSError, match="No space"):
        index.add(list(range(200, 260)), docs[200:])  # a fold: hnswlib's file, then links
    index.close()
    monkeypatch.undo()
    assert _manifest(path) == before
    reader = Index.open(path, mode="r")
    assert len(reader) == 200 and reader.search([docs[5][:5]], k=1).ids[0, 0] == 5
    with Index.open(path) as index:  # the writer's open removes what the failure left
        assert not [p.name for p in path.iterdir() if p.name.endswith(".tmp")]
        index.add(list(range(200, 260)), docs[200:])
    assert len(Index.open(path, mode="r")) == 260


def test_an_index_with_vectors_keeps_them(tmp_path):
    """Indexes written before links files (no "graph_vectors" in their entry) keep their
    layout, so that the versions that wrote them still read them."""
    docs = _docs(5, 260)
    path = _build(tmp_path / "ix", docs, [200], graph_vectors=True)
    manifest = _manifest(path)
    del manifest["store"]["entry"]["graph_vectors"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with Index.open(path) as index:
        index.add(list(range(200, 260)), docs[200:])
    assert _entry(path)["graph_vectors"] is True and _manifest(path)["format_version"] == 1
    assert not Index.open(path, mode="r").store._graph.links_file


def test_the_option_is_checked(tmp_path):
    with pytest.raises(MuveraError, match="needs quantization='int8'"):
        Index.create(tmp_path / "a", CONFIG, store_options={"quantization": "none",
                                                           "graph_vectors": False})  # fmt: skip
    with pytest.raises(MuveraError, match="must be a bool"):
        Index.create(tmp_path / "b", CONFIG, store_options={"graph_vectors": 0})
    with Index.create(tmp_path / "c", CONFIG, store_options={"quantization": "none"}) as index:
        assert index.store.graph_vectors is True  # hnswlib searches them
    path = _build(tmp_path / "d", _docs(6, 20), [20])
    manifest = _manifest(path)
    manifest["store"]["entry"]["graph_vectors"] = "no"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MuveraError, match="graph_vectors must be a bool"):
        Index.open(path, mode="r")


def _damaged(tmp_path, damage):
    path = _build(tmp_path / "ix", _docs(7, 120), [100, 20])
    entry = _entry(path)
    target = path / entry["segments"][0]["file"] if damage == "segment" else path / entry["file"]
    data = bytearray(target.read_bytes())
    n_main = entry["count"]
    if damage == "magic_version":
        struct.pack_into("<I", data, 8, 2)
    elif damage == "dimension":
        struct.pack_into("<I", data, 12, 7)
    elif damage == "truncated":
        del data[len(data) // 2 :]
    elif damage == "header":
        struct.pack_into("<Q", data, LINKS_HEADER.size + 16, n_main + 5)  # more rows
    elif damage == "record_size":
        struct.pack_into("<Q", data, LINKS_HEADER.size + 24, 12)
    elif damage == "neighbour_count":
        max_m0 = HEADER.unpack_from(data, LINKS_HEADER.size)[9]
        struct.pack_into("<H", data, LINKS_HEADER.size + HEADER.size, max_m0 + 1)
    elif damage == "upper_lists":
        data += b"\x01\x00"
        del data[-40:]
    elif damage == "codes_name":
        manifest = _manifest(path)
        del manifest["store"]["entry"]["codes_file"]
        (path / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "codes_file":
        (path / entry["codes_file"]).unlink()
    elif damage == "segment":
        del data[LINKS_HEADER.size + HEADER.size + 30 :]
    target.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("magic_version", "links file version 2"),
        ("dimension", "dimension 7"),
        ("truncated", "links file|rows|truncated|past the file"),
        ("header", "links file|rows"),
        ("record_size", "links file"),
        ("neighbour_count", "longer than max_m0"),
        ("upper_lists", "upper-level|truncated|past the file"),
        ("codes_name", "no codes file named"),
        ("codes_file", "cannot read the FDE codes"),
        ("segment", "links file|truncated|rows"),
    ],
)
def test_damaged_links_files_are_refused(tmp_path, damage, message):
    path = _damaged(tmp_path, damage)
    with pytest.raises(MuveraError, match=message):
        Index.open(path, mode="r")
    with pytest.raises(MuveraError, match=message):
        Index.open(path)


def test_flipped_bytes_never_crash(tmp_path):
    """Every 97th byte of a links file flipped: a clear error or a search, never a crash
    (the compiled walk reads only lists checked first)."""
    path = _build(tmp_path / "ix", _docs(8, 120), [120])
    target = path / _entry(path)["file"]
    clean = target.read_bytes()
    for at in range(0, len(clean), 97):
        data = bytearray(clean)
        data[at] ^= 0xFF
        target.write_bytes(bytes(data))
        with contextlib.suppress(MuveraError):
            Index.open(path, mode="r").search([_docs(9, 1)[0]], k=3)
    target.write_bytes(clean)


def test_a_failed_write_back_leaves_nothing(tmp_path, monkeypatch):
    """A fold writes the main links file back for hnswlib into the index folder (a
    ``.*.tmp`` file, removed after loading, on failure, and by a writer's open after a
    crash)."""
    docs = _docs(10, 260)
    path = _build(tmp_path / "ix", docs, [200])
    real = hnsw_links.restore_vectors

    def half(graph, target, sync=True):
        real(graph, target, sync)
        assert target.name.startswith(".") and target.name.endswith(".tmp")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hnsw_links, "restore_vectors", half)
    index = Index.open(path)
    with pytest.raises(OSError, match="No space"):
        index.add(list(range(200, 260)), docs[200:])
    index.close()
    monkeypatch.undo()
    assert sorted(p.name for p in path.iterdir() if p.name.startswith(".")) == [".lock"]
    (path / ".hnsw-000001.bin.restore.tmp").write_bytes(b"left by a crash")
    with Index.open(path) as index:
        assert not (path / ".hnsw-000001.bin.restore.tmp").exists()
        index.add(list(range(200, 260)), docs[200:])
    assert len(Index.open(path, mode="r")) == 260
