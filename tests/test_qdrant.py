"""The qdrant store in qdrant-client's local mode (the live-server suite is test_qdrant_live.py)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ragged

from muvera import FDEConfig, Index, MuveraError
from muvera.stores.qdrant import upsert_batches

qdrant_client = pytest.importorskip("qdrant_client")
models = qdrant_client.models
D = 16


def _docs(n, seed=1):
    rng = np.random.default_rng(seed)
    return ragged(rng, rng.integers(3, 20, n), D)


def test_upserts_are_split_under_the_request_cap(tmp_path):
    docs = _docs(40)
    client = qdrant_client.QdrantClient(location=":memory:")
    calls = []
    original = client.upsert

    def counting(*args, **kwargs):
        calls.append(len(kwargs["points"]))
        return original(*args, **kwargs)

    client.upsert = counting
    cfg = FDEConfig(dimension=D, num_repetitions=4)
    # About 12 bytes per float in JSON: each point is >= 12 * (cfg dims + 3 * 16) bytes.
    cap = 12 * (cfg.output_dimension + 20 * D) * 5
    with Index.create(
        tmp_path / "ix", cfg, store="qdrant", store_options={"client": client, "request_bytes": cap}
    ) as index:
        index.add(list(range(40)), docs)
        assert sum(calls) == 40 and len(calls) >= 8 and max(calls) <= 5
        assert len(index.store) == 40


def test_upsert_batches_edge_cases():
    assert list(upsert_batches([], 10)) == []
    assert list(upsert_batches([11], 10)) == [(0, 1)]
    assert list(upsert_batches([3, 3, 3, 3], 6)) == [(0, 2), (2, 4)]


def test_filters_and_payloads_pass_through(tmp_path):
    docs = _docs(30)
    with Index.create(
        tmp_path / "ix",
        FDEConfig(dimension=D),
        store="qdrant",
        store_options={"location": ":memory:", "collection": "c1"},
    ) as index:
        index.add(
            [f"d{i}" for i in range(30)],
            docs,
            payloads=[{"lang": "en" if i % 2 else "fr"} for i in range(30)],
        )
        only_en = models.Filter(
            must=[models.FieldCondition(key="lang", match=models.MatchValue(value="en"))]
        )
        result = index.search(
            [d[:3] for d in docs[:4]], k=5, query_filter=only_en, with_payloads=True
        )
        hits = [x for x in result.ids.ravel() if x != -1]
        assert hits and all(int(x[1:]) % 2 == 1 for x in hits)
        assert all(p == {"lang": "en"} for row in result.payloads for p in row if p is not None)
        fde_only = index.search([docs[0]], k=3, rerank=False, query_filter=only_en)
        assert all(int(x[1:]) % 2 == 1 for x in fde_only.ids[0])


def test_reopen_on_disk_and_memory_and_collection_errors(tmp_path):
    docs = _docs(10)
    opts = {"path": str(tmp_path / "qdata"), "collection": "keep"}
    with Index.create(
        tmp_path / "disk", FDEConfig(dimension=D), store="qdrant", store_options=opts
    ) as index:
        index.add(list(range(10)), docs)
        expect = index.search([docs[2]], k=3).ids
    with Index.open(tmp_path / "disk") as index:
        assert len(index) == 10
        np.testing.assert_array_equal(index.search([docs[2]], k=3).ids, expect)
        np.testing.assert_allclose(index.tokens(2), docs[2], atol=1e-3)  # kept as float16
    with pytest.raises(MuveraError, match="already exists"):
        Index.create(tmp_path / "again", FDEConfig(dimension=D), store="qdrant", store_options=opts)
    with Index.create(
        tmp_path / "mem",
        FDEConfig(dimension=D),
        store="qdrant",
        store_options={"location": ":memory:"},
    ) as index:
        index.add([1], docs[:1])
    import muvera.stores.qdrant

    muvera.stores.qdrant._LOCAL_CLIENTS.clear()  # as in a new process
    with pytest.raises(MuveraError, match="in-memory Qdrant that is gone"):
        Index.open(tmp_path / "mem")
    with pytest.raises(MuveraError, match="unknown qdrant store options"):
        Index.create(
            tmp_path / "x",
            FDEConfig(dimension=D),
            store="qdrant",
            store_options={"locaton": ":memory:"},
        )
    with pytest.raises(MuveraError, match="needs url"):
        Index.create(tmp_path / "y", FDEConfig(dimension=D), store="qdrant", store_options={})


def test_points_outside_the_last_commit_are_never_returned(tmp_path):
    """A writer that died after writing points but before its commit (or a commit whose
    point deletion did not run) leaves points the manifest does not list: searches skip
    them instead of failing."""
    docs = _docs(12)
    with Index.create(
        tmp_path / "ix", FDEConfig(dimension=D), store="qdrant",
        store_options={"location": ":memory:"},
    ) as index:  # fmt: skip
        index.add(list(range(12)), docs)
        index.delete([5])
        store = index.store
        fde = index.encoder.encode_documents([docs[5]])
        for label in (5, 12, 999):  # dead, next, far beyond
            store.client.upsert(
                collection_name=store.collection,
                points=[models.PointStruct(
                    id=label,
                    vector={"fde": fde[0].tolist(), "tokens": docs[5].tolist()},
                    payload={"muvera_id": "ghost"},
                )],
                wait=True,
            )  # fmt: skip
        for result in (
            index.search([docs[5]], k=4, with_payloads=True),
            index.search_exact([docs[5]], k=4, with_payloads=True),
        ):
            ids = result.ids[0].tolist()
            assert 5 not in ids and "ghost" not in ids and ids[0] != -1
            assert result.payloads is not None and len(result.payloads[0]) == 4


BACKENDS = ["local", "edge"]  # qdrant-client's local mode; Qdrant's engine (qdrant-edge-py)


def _options(backend: str, tmp_path, memory: bool = False) -> dict:
    if backend == "edge":
        pytest.importorskip("qdrant_edge")
        return {"edge_path": str(tmp_path / "edge")}
    return {"location": ":memory:"} if memory else {"path": str(tmp_path / "qdata")}


def _points(index) -> dict[int, dict]:
    store = index.store
    points, _ = store.client.scroll(store.collection, limit=10_000, with_payload=True)
    return {int(p.id): dict(p.payload) for p in points}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failed_upsert_keeps_the_old_document_and_leaves_no_points(
    tmp_path, monkeypatch, backend
):
    """The commit of an upsert fails after its points reached Qdrant: the old version stays
    (searchable, same tokens), the new points are removed, and the next write works."""
    import muvera.index.manifest as mf

    docs = _docs(10)
    with Index.create(
        tmp_path / "ix", FDEConfig(dimension=D), store="qdrant",
        store_options=_options(backend, tmp_path, memory=True),
    ) as index:  # fmt: skip
        index.add(list(range(10)), docs)
        before = _points(index)
        replacement = _docs(1, seed=9)[0]

        def refuse(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(mf, "write_manifest", refuse)
        with pytest.raises(OSError, match="disk full"):
            index.upsert([3], [replacement])
        with pytest.raises(OSError, match="disk full"):
            index.delete([4])
        monkeypatch.undo()
        assert _points(index) == before  # nothing new, nothing deleted
        np.testing.assert_allclose(index.tokens(3), docs[3], atol=1e-3)
        assert index.search([docs[3]], k=1).ids[0, 0] == 3
        assert index.search([docs[4]], k=1).ids[0, 0] == 4
        index.upsert([3], [replacement])  # and now it commits
        np.testing.assert_allclose(index.tokens(3), replacement, atol=1e-3)
        assert len(_points(index)) == 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_readers_see_only_committed_points_and_a_writer_recovers(tmp_path, monkeypatch, backend):
    """A writer dies between writing points (and deferring deletions) and its commit: a
    reader's searches see exactly the committed documents (k hits, none of the new points),
    and the next writer's open removes the uncommitted points."""
    import muvera.index.manifest as mf
    from muvera.stores.qdrant import QdrantStore

    docs = _docs(20)
    path = tmp_path / "ix"
    opts = _options(backend, tmp_path)
    with Index.create(path, FDEConfig(dimension=D), store="qdrant", store_options=opts) as index:
        index.add(list(range(12)), docs[:12])
        index.delete([0])  # committed; its point is removed after the commit
        assert 0 not in {p["muvera_id"] for p in _points(index).values()}

        def crash(*args, **kwargs):
            raise KeyboardInterrupt  # the process "dies" here: no rollback runs

        monkeypatch.setattr(mf, "write_manifest", crash)
        monkeypatch.setattr(QdrantStore, "recover", lambda self: None)
        with pytest.raises(KeyboardInterrupt):
            index.upsert(list(range(1, 20)), docs[1:20])  # 19 new points, 11 deletions
        monkeypatch.undo()
        assert len(_points(index)) == 11 + 19  # the crash left Qdrant ahead of the folder
        reader = Index.open(path, mode="r", store_options={"client": index.store.client})
        for doc_id in (5, 15):
            result = reader.search([docs[doc_id]], k=8)
            assert len(result.ids[0]) == 8 and -1 not in result.ids[0].tolist()
            assert set(result.ids[0].tolist()) <= set(range(1, 12))
        assert reader.search([docs[5]], k=1).ids[0, 0] == 5
    with Index.open(path) as writer:  # recovery: Qdrant back to the committed state
        assert len(writer) == 11
        points = _points(writer)
        assert sorted(p["muvera_id"] for p in points.values()) == list(range(1, 12))
        np.testing.assert_allclose(writer.tokens(7), docs[7], atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_commit_whose_deletions_did_not_reach_qdrant_is_finished_later(
    tmp_path, monkeypatch, backend
):
    """The manifest commit is written but removing the deleted points fails (Qdrant down):
    the commit stands, readers do not see the deleted documents, the next writer removes
    them."""
    from muvera.stores.qdrant import QdrantStore

    docs = _docs(10)
    path = tmp_path / "ix"
    opts = _options(backend, tmp_path)
    with Index.create(path, FDEConfig(dimension=D), store="qdrant", store_options=opts) as index:
        index.add(list(range(10)), docs)

        def down(self, labels):
            raise ConnectionError("qdrant is down")

        monkeypatch.setattr(QdrantStore, "_remove_points", down)
        index.delete([2, 3])  # logs a warning; the commit stands
        monkeypatch.undo()
        assert len(index) == 8 and len(_points(index)) == 10
        result = index.search([docs[2]], k=8)
        assert 2 not in result.ids[0].tolist() and -1 not in result.ids[0].tolist()
    with Index.open(path) as writer:
        assert len(_points(writer)) == 8


@pytest.mark.parametrize("backend", BACKENDS)
def test_int8_fde_quantization_and_on_disk_tokens(tmp_path, backend):
    """The recipe for large collections: int8 scalar quantization of the FDE vector (in
    RAM, rescored) and token vectors on disk; the collection is created with both and the
    two-stage search still equals exact MaxSim over all candidates."""
    import json

    from muvera import maxsim

    docs = _docs(40)
    options = {**_options(backend, tmp_path), "fde_quantization": "int8", "tokens_on_disk": True}
    with Index.create(tmp_path / "ix", FDEConfig(dimension=D), store="qdrant",
                      store_options=options) as index:  # fmt: skip
        index.add(list(range(40)), docs)
        queries = [d[:3] for d in docs[:6]]
        result = index.search(queries, k=5, candidates=40)
        expect = np.argsort(-maxsim(queries, docs), axis=1, kind="stable")[:, :5]
        np.testing.assert_array_equal(result.ids, expect)
        if backend == "edge":
            config = json.loads((tmp_path / "edge" / "muvera" / "edge_config.json").read_text())
            vectors = config["vectors"]
            assert vectors["fde"]["quantization_config"]["scalar"]["type"] == "int8"
            assert vectors["tokens"]["on_disk"] is True
        else:
            params = index.store.client.get_collection("muvera").config.params.vectors
            assert params["fde"].quantization_config.scalar.type == models.ScalarType.INT8
            assert params["tokens"].on_disk is True
    with pytest.raises(MuveraError, match="fde_quantization"):
        Index.create(tmp_path / "bad", FDEConfig(dimension=D), store="qdrant",
                     store_options={**_options(backend, tmp_path / "b"),
                                    "fde_quantization": "int4"})  # fmt: skip
