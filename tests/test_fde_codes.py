"""Persisted FDE codes of the hnswlib store (fde-codes.bin / fde-scales.bin): written at
commits, appended, mapped by readers instead of re-quantizing every row, and checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import ragged

from muvera import FDEConfig, Index, MuveraError, native
from muvera.stores.hnsw import FDE_CODES, FDE_SCALES
from muvera.stores.hnsw_graph import quantize_rows

pytest.importorskip("hnswlib")
pytestmark = pytest.mark.skipif(native.load() is None, reason="the int8 walk needs the kernels")
D = 8
CONFIG = FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=2)


def _docs(seed, n):
    rng = np.random.default_rng(seed)
    return ragged(rng, rng.integers(3, 9, n), D)


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _edit_codes(path, **changes):
    manifest = _manifest(path)
    manifest["store"]["entry"]["codes"].update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def built(tmp_path):
    path = tmp_path / "ix"
    docs = _docs(0, 300)
    with Index.create(path, CONFIG) as index:
        index.add(list(range(200)), docs[:200])
        index.add(list(range(200, 300)), docs[200:])
        index.delete([5])
    return path, docs


def test_codes_are_written_appended_and_mapped_by_readers(built):
    path, docs = built
    entry = _manifest(path)["store"]["entry"]
    d = _manifest(path)["fde_dimension"]
    assert entry["codes"] == {"file": FDE_CODES, "scales": FDE_SCALES, "rows": 300}
    assert (path / FDE_CODES).stat().st_size == 300 * d
    assert (path / FDE_SCALES).stat().st_size == 300 * 8
    reader = Index.open(path, mode="r")
    graph = reader.store._graph
    assert not graph.codes.flags.writeable  # the file's map, not a copy
    want_codes, want_meta = quantize_rows(graph.vectors(np.arange(300)))
    np.testing.assert_array_equal(graph.codes, want_codes)
    np.testing.assert_array_equal(graph.meta, want_meta)
    queries = [docs[i][:3] for i in range(0, 300, 30)]
    mapped = reader.search(queries, k=5, candidates=20)
    manifest = _manifest(path)  # the same index quantizing at open gives the same results
    del manifest["store"]["entry"]["codes"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    quantized = Index.open(path, mode="r").search(queries, k=5, candidates=20)
    np.testing.assert_array_equal(mapped.ids, quantized.ids)
    np.testing.assert_array_equal(mapped.scores, quantized.scores)


def test_a_writer_appends_only_new_rows(built):
    path, docs = built
    first = (path / FDE_CODES).read_bytes()
    with Index.open(path) as index:
        index.add([1000, 1001], _docs(1, 2))
        assert index.manifest["store"]["entry"]["codes"]["rows"] == 302
        assert index.search([docs[7][:3]], k=1).ids[0, 0] == 7
    data = (path / FDE_CODES).read_bytes()
    assert data[: len(first)] == first and len(data) == len(first) + 2 * len(first) // 300


def test_an_uncommitted_tail_is_ignored_then_cut(built):
    """A writer that died after appending codes, before its manifest: the tail is not read."""
    path, docs = built
    committed = (path / FDE_CODES).stat().st_size
    with (path / FDE_CODES).open("ab") as fh:
        fh.write(b"\x7f" * 1000)
    with (path / FDE_SCALES).open("ab") as fh:
        fh.write(np.full(50, np.nan, np.float32).tobytes())
    assert Index.open(path, mode="r").search([docs[9][:3]], k=1).ids[0, 0] == 9
    with Index.open(path) as index:
        index.add([2000], _docs(2, 1))
    rows = _manifest(path)["store"]["entry"]["codes"]["rows"]
    assert rows == 301 and (path / FDE_CODES).stat().st_size == committed * 301 // 300


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rows": 301}, "the graph has 300"),
        ({"rows": -1}, "rows"),
        ({"file": "other.bin"}, "malformed"),
        ({"scales": "../x"}, "not a file name"),
    ],
)
def test_damaged_code_sections_raise(built, change, message):
    path = built[0]
    _edit_codes(path, **change)
    with pytest.raises(MuveraError, match=message):
        Index.open(path, mode="r")


def test_damaged_code_files_raise_or_search(built):
    path, docs = built
    scales = np.fromfile(path / FDE_SCALES, np.float32)
    codes = (path / FDE_CODES).read_bytes()
    (path / FDE_CODES).write_bytes(codes[:-1])
    with pytest.raises(MuveraError, match="FDE codes"):
        Index.open(path, mode="r")
    flipped = bytearray(codes)
    for i in range(0, len(flipped), 7):
        flipped[i] ^= 0x55
    (path / FDE_CODES).write_bytes(bytes(flipped))  # wrong values: worse results, no crash
    hits = Index.open(path, mode="r").search([docs[0][:3]], k=5, candidates=20)
    assert hits.ids.shape == (1, 5)
    bad = scales.copy()
    bad[3] = np.inf
    bad.tofile(path / FDE_SCALES)
    with pytest.raises(MuveraError, match="finite"):
        Index.open(path, mode="r")


def test_no_codes_without_the_int8_walk(tmp_path):
    path = tmp_path / "ix"
    with Index.create(path, CONFIG, store_options={"quantization": "none"}) as index:
        index.add(list(range(50)), _docs(3, 50))
    assert "codes" not in _manifest(path)["store"]["entry"]
    assert not (path / FDE_CODES).exists()


def test_codes_dropped_by_an_older_writer_are_written_again(built):
    """An older muvera's commit keeps no codes section (its entry does not know it) while
    the graph grows: the next writer that knows them rewrites every row."""
    path, _ = built
    manifest = _manifest(path)
    del manifest["store"]["entry"]["codes"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with (path / FDE_CODES).open("ab") as fh:  # and whatever it left in the files
        fh.write(b"\x01" * 64)
    with Index.open(path) as index:
        index.add([3000], _docs(4, 1))
    reader = Index.open(path, mode="r")
    graphs = reader.store.graphs  # the main graph and the new row's segment
    assert [len(g) for g in graphs] == [300, 1]
    assert reader.manifest["store"]["entry"]["codes"]["rows"] == 301
    for graph in graphs:
        want_codes, want_meta = quantize_rows(graph.vectors(np.arange(len(graph))))
        np.testing.assert_array_equal(graph.codes, want_codes)
        np.testing.assert_array_equal(graph.meta, want_meta)
    stored = np.fromfile(path / FDE_CODES, np.int8).reshape(301, -1)
    np.testing.assert_array_equal(stored, np.concatenate([g.codes for g in graphs]))


def test_checksums_cover_the_codes_as_they_grow(tmp_path):
    path = tmp_path / "ix"
    docs = _docs(5, 100)
    with Index.create(path, CONFIG, checksums=True) as index:
        index.add(list(range(50)), docs[:50])
        index.add(list(range(50, 100)), docs[50:])  # carried forward over appended rows
        index.verify()
    assert {FDE_CODES, FDE_SCALES} <= set(_manifest(path)["checksums"])
    data = bytearray((path / FDE_CODES).read_bytes())
    data[10] ^= 1
    (path / FDE_CODES).write_bytes(bytes(data))
    with pytest.raises(MuveraError, match=f"{FDE_CODES} is damaged"):
        Index.open(path, mode="r", verify=True)
