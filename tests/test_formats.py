"""Indexes saved by earlier muvera versions open and search as they did (voyager-style saved
files per format version: tests/data/index-v1 was written by tests/data/index-v1/make.py at
commit 1d005a2, format version 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from muvera import Index, native
from muvera.stores.hnsw_graph import quantize_rows

DATA = Path(__file__).parent / "data" / "index-v1"
EXPECTED = json.loads((DATA / "expected.json").read_text())
KINDS = sorted(EXPECTED)


def _queries() -> list[np.ndarray]:
    with np.load(DATA / "queries.npz") as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


@pytest.mark.parametrize("name", KINDS)
def test_v1_index_searches_as_written(tmp_path, name, maxsim_kernel):
    shutil.copytree(DATA / name, tmp_path / name)
    expected = EXPECTED[name]
    queries = _queries()
    with Index.open(tmp_path / name, mode="r") as index:
        assert len(index) == expected["len"]
        assert index.metadata == {"made_by": "1d005a2"}
        result = index.search(queries, k=5, candidates=20, with_payloads=True)
        assert result.ids.tolist() == expected["ids"]
        np.testing.assert_allclose(result.scores, expected["scores"], rtol=1e-5, atol=1e-5)
        assert result.payloads == expected["payloads"]
        fde = index.search(queries, k=5, rerank=False)
        if name.startswith("exact") or maxsim_kernel == "native":
            # (the fixture's hnswlib FDE hits come from the compiled int8 walk; hnswlib's
            # own float32 walk, used without the compiled kernel, may find other ones)
            assert fde.ids.tolist() == expected["fde_ids"]
            np.testing.assert_allclose(fde.scores, expected["fde_scores"], rtol=1e-5, atol=1e-5)
        exact = index.search_exact(queries, k=5)
        assert exact.ids.tolist() == expected["exact_ids"]
        np.testing.assert_allclose(exact.scores, expected["exact_scores"], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(index.tokens("d5"), np.float32(expected["tokens_d5"]))


@pytest.mark.parametrize("name", KINDS)
def test_v1_index_takes_new_writes(tmp_path, name):
    shutil.copytree(DATA / name, tmp_path / name)
    rng = np.random.default_rng(1)
    extra = [rng.standard_normal((4, 8)).astype(np.float32) for _ in range(3)]
    with Index.open(tmp_path / name) as index:
        index.add(["x0", "x1", "x2"], extra)
        index.delete(["d0"])
    with Index.open(tmp_path / name, mode="r") as index:
        assert len(index) == EXPECTED[name]["len"] + 2
        assert index.search([extra[1]], k=1, candidates=50).ids[0, 0] == "x1"
        assert "d0" not in index


V3 = Path(__file__).parent / "data" / "index-v3"  # written by tests/data/make_index_v3.py
V4 = Path(__file__).parent / "data" / "index-v4"  # written by tests/data/make_index_v4.py


def _saved(root: Path, name: str, tmp_path: Path) -> tuple[dict, list[np.ndarray]]:
    """A saved index copied into ``tmp_path`` (tests may write to it): what it returned
    when written, and its queries."""
    shutil.copytree(root / name, tmp_path / name)
    with np.load(root / "queries.npz") as data:
        queries = [data[f"arr_{i}"] for i in range(len(data.files))]
    return json.loads((root / "expected.json").read_text())[name], queries


@pytest.mark.parametrize("name", ["exact-float16", "hnswlib-float16"])
def test_v3_calibrated_index_searches_as_written(tmp_path, name, maxsim_kernel):
    expected, queries = _saved(V3, name, tmp_path)
    with Index.open(tmp_path / name, mode="r") as index:
        assert index.manifest["format_version"] == 3
        assert index.calibration == expected["calibration"]
        assert len(index) == expected["len"]
        result = index.search(queries, k=5, candidates=20)
        assert result.ids.tolist() == expected["ids"]
        np.testing.assert_allclose(result.scores, expected["scores"], rtol=1e-5, atol=1e-5)
        fde = index.search(queries, k=5, rerank=False)
        if name.startswith("exact") or maxsim_kernel == "native":
            assert fde.ids.tolist() == expected["fde_ids"]
            np.testing.assert_allclose(fde.scores, expected["fde_scores"], rtol=1e-5, atol=1e-5)
    with Index.open(tmp_path / name) as index:  # takes new writes, stays calibrated
        index.add(["x"], [queries[0]])
        assert index.search([queries[0]], k=1, candidates=40).ids[0, 0] == "x"
        assert index.calibration == expected["calibration"]


@pytest.mark.parametrize("name", ["exact-int8", "hnswlib-int4"])
def test_v4_quantized_index_searches_as_written(tmp_path, name, maxsim_kernel):
    expected, queries = _saved(V4, name, tmp_path)
    with Index.open(tmp_path / name, mode="r") as index:
        assert index.manifest["format_version"] == 4
        assert len(index) == expected["len"]
        np.testing.assert_array_equal(index.get(["d5"])[0].tokens, expected["tokens_d5"])
        result = index.search(queries, k=5, candidates=20)
        assert result.ids.tolist() == expected["ids"]
        np.testing.assert_allclose(result.scores, expected["scores"], rtol=1e-5, atol=1e-5)
    with Index.open(tmp_path / name) as index:  # takes new writes in the same codes
        index.add(["x"], [queries[0]])
        assert index.search([queries[0]], k=1, candidates=40).ids[0, 0] == "x"
        assert index.manifest["tokens"]["dtype"] == name.split("-")[1]


V5 = Path(__file__).parent / "data" / "index-v5"  # written by tests/data/make_index_v5.py


def test_v5_index_with_token_cells_searches_as_written(tmp_path, maxsim_kernel, monkeypatch):
    # the saved results were searched with the FDE's top half of the candidates (the
    # first SCAN_PART): the files are what is checked here, not today's candidate split
    monkeypatch.setattr("muvera.stores.local.SCAN_PART", 2)
    expected, queries = _saved(V5, "exact-cells", tmp_path)
    path = tmp_path / "exact-cells"
    with Index.open(path, mode="r") as index:
        assert index.manifest["format_version"] == 5
        assert index.manifest["tokens"]["cells"] == expected["cells"]
        assert index.default_candidates == 100
        assert len(index) == expected["len"]
        result = index.search(queries, k=5, candidates=20)
        assert result.ids.tolist() == expected["ids"]
        np.testing.assert_allclose(result.scores, expected["scores"], rtol=1e-5, atol=1e-5)
    with Index.open(path) as index:  # new writes get codes from the saved centroids
        before = (path / expected["cells"]["centroids"]).read_bytes()
        index.add(["x"], [queries[0]])
        assert index.search([queries[0]], k=1, candidates=4).ids[0, 0] == "x"
        assert index.manifest["tokens"]["cells"]["bytes"] == (
            expected["cells"]["bytes"] + 2 * len(queries[0])
        )
        assert (path / expected["cells"]["centroids"]).read_bytes() == before


V6 = Path(__file__).parent / "data" / "index-v6"  # written by tests/data/make_index_v6.py
V10 = Path(__file__).parent / "data" / "index-v10"  # make_index_v10.py: residual4lm


@pytest.mark.parametrize(
    ("root", "dtype", "version"), [(V6, "residual4", 6), (V10, "residual4lm", 10)]
)
def test_saved_index_with_residual_tokens_searches_as_written(
    tmp_path, maxsim_kernel, monkeypatch, root, dtype, version
):
    """residual4 (format version 6) and residual4lm (10: Lloyd-Max levels) rows decode to
    the saved scores, in the compiled kernel and numpy; a later add appends residual rows
    of the saved cells."""
    if version == 6:  # its saved results were searched with the FDE's top half of the
        # candidates (the first SCAN_PART): the files are what is checked here
        monkeypatch.setattr("muvera.stores.local.SCAN_PART", 2)
    expected, queries = _saved(root, f"exact-{dtype}", tmp_path)
    path = tmp_path / f"exact-{dtype}"
    with Index.open(path, mode="r") as index:
        assert index.manifest["format_version"] == version
        tokens = index.manifest["tokens"]
        assert tokens["dtype"] == dtype and tokens["cells"] == expected["cells"]
        assert 0 < tokens["residual_from"] == expected["residual_from"]
        assert len(index) == expected["len"]
        result = index.search(queries, k=5, candidates=20)
        assert result.ids.tolist() == expected["ids"]
        np.testing.assert_allclose(result.scores, expected["scores"], rtol=1e-5, atol=1e-5)
    with Index.open(path) as index:  # new rows are residuals of the saved centroids' cells
        index.add(["x"], [queries[0]])
        assert index.search([queries[0]], k=1, candidates=4).ids[0, 0] == "x"
        assert index.manifest["tokens"]["residual_from"] == expected["residual_from"]
        np.testing.assert_allclose(index.tokens("x"), queries[0], atol=0.05)


V7 = Path(__file__).parent / "data" / "index-v7"  # written by tests/data/make_index_v7.py


def test_v7_index_with_graph_segments_searches_as_written(tmp_path):
    expected, queries = _saved(V7, "hnswlib-segments", tmp_path)
    path = tmp_path / "hnswlib-segments"
    with Index.open(path, mode="r") as index:
        assert index.manifest["format_version"] == 7
        assert index.manifest["store"]["entry"] == expected["entry"]
        assert len(index) == expected["len"] and index.store.segments == 4
        result = index.search(queries, k=5, candidates=20)
        assert result.ids.tolist() == expected["ids"]
        np.testing.assert_allclose(result.scores, expected["scores"], rtol=1e-5, atol=1e-5)
        fde_only = index.search(queries, k=5, rerank=False).ids.tolist()
        assert fde_only == expected["fde_ids"]
        assert not {"d3", "d225"} & set(np.ravel(fde_only).tolist())
        for graph in index.store.graphs:  # each part's rows of the single codes file
            assert not graph.codes.flags.writeable
            want = quantize_rows(graph.vectors(np.arange(len(graph))))[0]
            np.testing.assert_array_equal(graph.codes, want)
    with Index.open(path) as index:  # 60 new rows fold the segments into one main graph
        index.add([f"x{i}" for i in range(60)], [queries[i % len(queries)] for i in range(60)])
        assert index.store.segments == 0 and "unmarked" not in index.manifest["store"]["entry"]
        assert "codes" not in index.manifest["store"]["entry"]
        assert index.store.code_rows == (300 if native.load() is not None else 0)
        assert int(index.store._graph.deleted.sum()) == 2  # the deletes, now in the file
        result = index.search(queries, k=5, candidates=20)
        assert not {"d3", "d225"} & set(np.ravel(result.ids).tolist())


CODES = Path(__file__).parent / "data" / "index-fde-codes"  # make_index_fde_codes.py


def test_index_with_fde_codes_searches_as_written(tmp_path, maxsim_kernel):
    expected, queries = _saved(CODES, "hnswlib-codes", tmp_path)
    path = tmp_path / "hnswlib-codes"
    with Index.open(path, mode="r") as index:
        assert index.manifest["format_version"] == 1  # older readers ignore the codes
        assert index.manifest["store"]["entry"]["codes"] == expected["codes"]
        assert len(index) == expected["len"]
        result = index.search(queries, k=5, candidates=20)
        assert result.ids.tolist() == expected["ids"]
        np.testing.assert_allclose(result.scores, expected["scores"], rtol=1e-5, atol=1e-5)
    if native.load() is not None:  # the single-file codes are mapped, not re-quantized
        with Index.open(path, mode="r") as index:
            graphs = index.store.graphs
            assert all(not g.codes.flags.writeable for g in graphs)
            d = graphs[0].codes.shape[1]
            stored = np.fromfile(path / "fde-codes.bin", np.int8).reshape(-1, d)
            np.testing.assert_array_equal(np.concatenate([g.codes for g in graphs]), stored)
    with Index.open(path) as index:  # its next commit writes a codes file per graph file
        index.add(["x"], [queries[0]])
        assert index.search([queries[0]], k=1, candidates=4).ids[0, 0] == "x"
        entry = index.manifest["store"]["entry"]
        assert "codes" not in entry  # the single-file section is dropped
        if native.load() is not None:  # without the walk: hnswlib, no codes
            files = [entry["codes_file"]] + [s["codes_file"] for s in entry.get("segments", [])]
            assert index.store.code_rows == len(index) + index.store.deleted
            assert all((path / name).is_file() for name in files)
    with Index.open(path, mode="r") as index:
        assert index.search([queries[0]], k=1, candidates=4).ids[0, 0] == "x"


@pytest.mark.skipif(native.load() is None, reason="the int8 walk needs the kernels")
def test_an_index_without_fde_codes_gets_them_at_its_next_commit(tmp_path):
    _, queries = _saved(V4, "hnswlib-int4", tmp_path)
    path = tmp_path / "hnswlib-int4"
    with Index.open(path) as index:
        assert "codes" not in index.manifest["store"]["entry"]
        index.add(["x"], [queries[0]])
        entry = index.manifest["store"]["entry"]
        assert entry["codes_file"] and all(s["codes_file"] for s in entry["segments"])
        assert index.store.code_rows == entry["count"] + sum(s["count"] for s in entry["segments"])
        assert index.manifest["format_version"] == 7  # the new row's graph segment


CODES_FILES = Path(__file__).parent / "data" / "index-codes-files"  # make_index_codes_files.py


def test_index_with_codes_files_searches_as_written(tmp_path):
    expected, queries = _saved(CODES_FILES, "hnswlib-codes-files", tmp_path)
    path = tmp_path / "hnswlib-codes-files"
    with Index.open(path, mode="r") as index:
        assert index.manifest["format_version"] == 7  # older readers ignore the codes files
        entry = index.manifest["store"]["entry"]
        assert entry == expected["entry"] and index.store.segments == 2
        assert entry["codes_file"] == "hnsw-000001.codes"
        assert len(index) == expected["len"]
        result = index.search(queries, k=5, candidates=20)
        assert result.ids.tolist() == expected["ids"]
        np.testing.assert_allclose(result.scores, expected["scores"], rtol=1e-5, atol=1e-5)
        assert index.search(queries, k=5, rerank=False).ids.tolist() == expected["fde_ids"]
        if native.load() is not None:
            assert index.store.code_rows == 230
            for graph in index.store.graphs:  # mapped from the files, not quantized
                assert not graph.codes.flags.writeable
                want = quantize_rows(graph.vectors(np.arange(len(graph))))[0]
                np.testing.assert_array_equal(graph.codes, want)
    saved = {name: (path / name).read_bytes() for name in ("hnsw-000001.codes",)}
    with Index.open(path) as index:  # a new segment and its codes; the others unchanged
        index.add(["x"], [queries[0]])
        assert index.search([queries[0]], k=1, candidates=4).ids[0, 0] == "x"
        assert index.store.segments == 3
    assert {name: (path / name).read_bytes() for name in saved} == saved


V8 = Path(__file__).parent / "data" / "index-v8"  # make_index_v8.py


def test_v8_links_files_search_as_written_and_grow(tmp_path, monkeypatch):
    """Graph files without vectors (links-file version 1): read by the walk over their codes
    files, written back for hnswlib by a build without the kernel, grown by segments and a
    fold into links files again."""
    expected, queries = _saved(V8, "hnswlib-links", tmp_path)
    path = tmp_path / "hnswlib-links"
    with Index.open(path, mode="r") as index:
        assert index.manifest["format_version"] == 8
        entry = index.manifest["store"]["entry"]
        assert entry == expected["entry"] and entry["graph_vectors"] is False
        assert (path / entry["file"]).read_bytes()[:8] == b"MUVLINKS"
        assert len(index) == expected["len"] and index.store.segments == 2
        result = index.search(queries, k=5, candidates=20)
        assert result.ids.tolist() == expected["ids"]
        np.testing.assert_allclose(result.scores, expected["scores"], rtol=1e-5, atol=1e-5)
        assert index.search(queries, k=5, rerank=False).ids.tolist() == expected["fde_ids"]
    with monkeypatch.context() as patch:  # hnswlib reads them written back
        patch.setattr(native, "load", lambda *args, **kwargs: None)
        with Index.open(path, mode="r") as index:
            assert index.store.hnswlib_loaded
            got = index.search(queries, k=5, candidates=20).ids
            assert got[:, 0].tolist() == [row[0] for row in expected["ids"]]
    if native.load() is None:
        return
    with Index.open(path) as index:
        index.add(["x"], [queries[0]])  # a segment
        index.add([f"y{i}" for i in range(60)], [queries[i % 6] for i in range(60)])  # a fold
        assert index.store.segments == 0
    with Index.open(path, mode="r") as index:
        assert all(graph.links_file for graph in index.store.graphs)
        copies = {"x"} | {f"y{i}" for i in range(0, 60, 6)}  # queries[0] itself: tied
        assert index.search([queries[0]], k=1, candidates=4).ids[0, 0] in copies
        assert len(index) == expected["len"] + 61


V9 = Path(__file__).parent / "data" / "index-v9"  # make_index_v9.py


def test_v9_cell_count_searches_as_written_and_fits_that_count(tmp_path):
    """Token cells asked for with a count and not fitted yet ({"count": 1024}): read as
    written, then the add that brings 32,768 tokens fits a 32 x 32 tree."""
    expected, queries = _saved(V9, "exact-cell-count", tmp_path)
    path = tmp_path / "exact-cell-count"
    with Index.open(path, mode="r") as index:
        assert index.manifest["format_version"] == 9
        assert index.manifest["tokens"]["cells"] == expected["cells"] == {"count": 1024}
        assert len(index) == expected["len"] and not index.store.uses_cells
        result = index.search(queries, k=5, candidates=20)
        assert result.ids.tolist() == expected["ids"]
        np.testing.assert_allclose(result.scores, expected["scores"], rtol=1e-5, atol=1e-5)
    rng = np.random.default_rng(2)
    extra = [rng.standard_normal((64, 8)).astype(np.float32) for _ in range(520)]
    with Index.open(path) as index:
        index.add([f"x{i}" for i in range(len(extra))], extra)
        cells = index.manifest["tokens"]["cells"]
        assert (cells["coarse"], cells["fine"]) == (32, 32) and index.store.uses_cells
    with Index.open(path, mode="r") as index:
        assert index.store.uses_cells and index.store.cells.cells.n_cells == 1024
        assert index.search([extra[7][:5]], k=1, candidates=30).ids[0, 0] == "x7"
