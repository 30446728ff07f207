"""kill -9 at any moment of a writer's life: the next open sees the last commit, whole
(every document it listed is there and searchable), for each store (Qdrant in
qdrant-client's local mode on disk)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from muvera import FDEConfig, Index

D = 8
CONFIG = FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=2)


def _doc(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    x = rng.standard_normal((3 + i % 5, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)  # unit rows: its own best match


def _big_doc(i: int) -> np.ndarray:
    """Documents of the "-cells" case's first add: 40 x 850 tokens fit the token cells."""
    x = np.random.default_rng(10**6 + i).standard_normal((850, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _writer(path: str, bulk: bool = False, sealed: bool = False) -> None:
    if sealed:  # graph files of 16 rows: commits write several, keep the full ones
        from muvera.stores import hnsw_parts

        hnsw_parts.SEAL_BYTES = 16 * 4 * CONFIG.output_dimension
    with Index.open(path) as index:
        i = max(index.records.label_ids, default=-1) + 1  # ids never used yet
        i += i % 2
        if bulk:  # everything inside one bulk, committed every 6 documents added
            with index.bulk(commit_every=6):
                _write_forever(index, i)
        _write_forever(index, i)


def _write_forever(index: Index, i: int) -> None:
    while True:  # adds, upserts, deletes and compactions until killed
        index.add([i, i + 1], [_doc(i), _doc(i + 1)])
        index.upsert([i], [_doc(i)])
        if i % 6 == 0:
            index.delete([i + 1])
        if i % 10 == 0:
            index.compact()
        i += 2


def _close_qdrant_clients() -> None:
    """Release the Qdrant storage for the next process (local mode and Edge lock it)."""
    from muvera.stores import qdrant

    for client in qdrant._LOCAL_CLIENTS.values():
        client.close()
    qdrant._LOCAL_CLIENTS.clear()


STORES = ["exact", "exact-int8", "hnswlib", "hnswlib-calibrated", "hnswlib-bulk", "hnswlib-sealed",
          "hnswlib-cells", "exact-residual4", "hnswlib-residual2", "hnswlib-residual4lm",
          "qdrant", "qdrant-edge"]  # fmt: skip


@pytest.mark.parametrize("store", STORES)
def test_kill_9_never_loses_a_commit(tmp_path, store):
    """Qdrant runs as qdrant-client's local mode on disk, and as Qdrant's own engine
    (Qdrant Edge: its WAL and segments); "hnswlib-calibrated" is a calibrated index
    (format version 3), which must stay calibrated; "exact-int8" keeps int8 token codes
    (format version 4); "hnswlib-bulk" writes inside ``Index.bulk(commit_every=6)``;
    "hnswlib-sealed" writes graph files of at most 16 rows (several a commit, full ones
    kept by later commits); "hnswlib-cells" starts with fitted token cells (format
    version 5), whose code file grows and is compacted with the tokens; "exact-residual4"
    too, its later rows stored as residuals of those cells (format version 6);
    "hnswlib-residual2" in 2 bits a value (format version 8); "hnswlib-residual4lm" in 4
    bits decoding to Lloyd-Max levels (format version 10)."""
    pytest.importorskip("qdrant_client" if store.startswith("qdrant") else "hnswlib")
    if store == "qdrant-edge":
        pytest.importorskip("qdrant_edge")
    path = tmp_path / "ix"
    options = {
        "qdrant": {"path": str(tmp_path / "qdata")},
        "qdrant-edge": {"edge_path": str(tmp_path / "edge")},
    }.get(store)
    kind = "qdrant" if options else store.split("-")[0]
    calibration: object = "off"
    if store.endswith("-calibrated"):
        from muvera.fde.calibration import Calibration

        calibration = Calibration.fit(np.concatenate([_doc(i) for i in range(400)]))
    cells = store.endswith(("-cells", "-residual4", "-residual2", "-residual4lm"))
    codes = ("int8", "residual4", "residual2", "residual4lm")
    dtype = store.split("-")[-1] if store.split("-")[-1] in codes else "float16"
    with Index.create(path, CONFIG, store=kind, store_options=options, calibration=calibration,
                      token_dtype=dtype) as index:  # fmt: skip
        if cells:
            index.add(list(range(40)), [_big_doc(i) for i in range(40)])
            assert index.store.uses_cells
    _close_qdrant_clients()  # the writers' processes open the storage
    # 4-bit and 2-bit codes of unit rows
    tolerance = {"residual4": 0.15, "residual4lm": 0.15, "residual2": 0.6}.get(dtype, 1e-2)
    ctx = mp.get_context("spawn")
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(8):
        writer_args = (str(path), store.endswith("-bulk"), store.endswith("-sealed"))
        proc = ctx.Process(target=_writer, args=writer_args)
        proc.start()
        _wait_for_a_commit(path, proc)  # start-up (imports, connections) done
        time.sleep(float(rng.uniform(0, 0.6)))  # then some more commits, killed anywhere
        assert proc.is_alive(), "the writer stopped by itself"
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        with Index.open(path, mode="r") as index:
            assert index.calibration["kind"] == ("centre" if calibration != "off" else "none")
            ids = index.ids
            if kind == "qdrant":  # every listed document is in Qdrant, nothing else shows
                assert set(ids) <= set(_qdrant_ids(index))
            assert len(ids) >= seen  # the writer only adds more than it deletes
            seen = len(ids)
            assert getattr(index.store, "uses_cells", False) == cells
            for doc_id in ids[-3:]:
                doc = _big_doc(doc_id) if cells and doc_id < 40 else _doc(doc_id)
                np.testing.assert_allclose(index.tokens(doc_id), doc, atol=tolerance)
                hit = index.search([doc], k=1, candidates=len(ids))
                assert hit.ids[0, 0] == doc_id
            _close_qdrant_clients()
    assert seen > 0
    if store.endswith("-sealed"):  # the crashes happened among sealed graph files
        with Index.open(path, mode="r") as index:
            entry = index.manifest["store"]["entry"]
        assert entry["count"] == 16 and 16 in [s["count"] for s in entry["segments"]]
    with Index.open(path) as index:  # a writer after the crashes: tidy, and it works
        index.add([10**6], [_doc(7)])
        assert not list(path.glob(".*.tmp"))
        if kind == "qdrant":  # recovered: Qdrant holds exactly the committed documents
            assert sorted(_qdrant_ids(index)) == sorted(index.ids)


def _wait_for_a_commit(path, proc, timeout: float = 60.0) -> None:
    manifest = path / "manifest.json"
    start, deadline = manifest.stat().st_mtime_ns, time.monotonic() + timeout
    while manifest.stat().st_mtime_ns == start and proc.is_alive():
        if time.monotonic() > deadline:
            raise AssertionError("the writer made no commit")
        time.sleep(0.01)


def _qdrant_ids(index: Index) -> list:
    store = index.store
    points, _ = store.client.scroll(store.collection, limit=100_000, with_payload=True)
    return [p.payload["muvera_id"] for p in points]
