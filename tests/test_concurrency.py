"""Readers and a writer at once, in separate processes: a reader sees one committed
generation, whole, for as long as it is open (compaction included), opens never fail while
commits land, and refresh() moves it to the latest commit."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from muvera import FDEConfig, Index

D = 8
CONFIG = FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=2)


def _docs(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    docs = [rng.standard_normal((int(m), D)).astype(np.float32) for m in rng.integers(2, 9, n)]
    return [x / np.linalg.norm(x, axis=1, keepdims=True) for x in docs]  # unit rows


def _writer(path: str, store: str, ready: mp.Event, stop: mp.Event) -> None:
    with Index.open(path) as index:
        ready.set()
        i = 0
        while not stop.is_set():
            ids = [f"w{i}-{j}" for j in range(3)]
            index.add(ids, _docs(3, 1000 + i))
            if i % 5 == 4:  # deletes that trigger compactions now and then
                index.delete([f"w{i}-0", f"w{i}-1", f"w{i - 1}-0", f"w{i - 1}-1"])
                index.compact()
            i += 1


def _readers_beside_a_writer(path, store: str, iterations: int) -> None:
    """``iterations`` times: open a reader, search, check, close, while a writer process
    commits and compacts; a reader opened at the start searches throughout. Zero failures."""
    pytest.importorskip("hnswlib")
    base = _docs(30, 0)
    with Index.create(path, CONFIG, store=store) as index:
        index.add([f"d{i}" for i in range(30)], base)
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=_writer, args=(str(path), store, ready, stop))
    writer.start()
    ready.wait(60)
    failures, opens, generations = [], 0, set()
    held = Index.open(path, mode="r")  # opened once, searched throughout
    held_len = len(held)
    try:
        while opens < iterations and writer.is_alive():
            try:
                with Index.open(path, mode="r") as reader:
                    opens += 1
                    generations.add(reader.manifest["generation"])
                    hit = reader.search([base[7][:3]], k=1, candidates=1000)
                    assert hit.ids[0, 0] == "d7"
                    assert len(reader) == len(reader.ids)
                got = held.search([base[12][:3]], k=1, candidates=1000)
                assert got.ids[0, 0] == "d12" and len(held) == held_len
                np.testing.assert_array_equal(held.tokens("d12"), base[12].astype(np.float16))
            except Exception as exc:
                failures.append(repr(exc))
    finally:
        stop.set()
        writer.join(120)
    assert writer.exitcode == 0
    assert not failures, f"{len(failures)} of {opens} reads failed: {failures[:3]}"
    assert opens == iterations and len(generations) >= min(iterations // 10, 50)
    assert held.refresh() and len(held) > held_len
    assert held.search([base[7][:3]], k=1, candidates=1000).ids[0, 0] == "d7"
    held.close()


@pytest.mark.parametrize("store", ["exact", "hnswlib"])
def test_readers_never_fail_while_a_writer_commits_and_compacts(tmp_path, store):
    _readers_beside_a_writer(tmp_path / "ix", store, 150)


@pytest.mark.slow
@pytest.mark.parametrize("store", ["exact", "hnswlib"])
def test_a_thousand_reads_beside_a_writer_never_fail(tmp_path, store):
    _readers_beside_a_writer(tmp_path / "ix", store, 1000)


@pytest.mark.parametrize("store", ["exact", "hnswlib"])
def test_a_reader_keeps_its_generation_through_compaction_until_refresh(tmp_path, store):
    pytest.importorskip("hnswlib")
    path = tmp_path / "ix"
    docs = _docs(40, 3)
    with Index.create(path, CONFIG, store=store) as writer:
        writer.add(list(range(40)), docs)
        reader = Index.open(path, mode="r")
        writer.delete(list(range(25)))  # more than half: the token file is rewritten
        assert list(path.glob("tokens-*.bin"))  # tokens.bin is kept a while for readers
        writer.add([100], _docs(1, 9))
    assert not (path / "tokens.bin").exists()  # gone when the writer closed
    assert len(reader) == 40 and 100 not in reader
    assert reader.search([docs[3][:4]], k=1, candidates=40).ids[0, 0] == 3  # deleted since
    np.testing.assert_array_equal(reader.tokens(3), docs[3].astype(np.float16))
    assert reader.refresh() is True
    assert len(reader) == 16 and 3 not in reader and 100 in reader
    assert reader.search([docs[30][:4]], k=1, candidates=40).ids[0, 0] == 30
    assert reader.refresh() is False
    reader.close()


def test_readers_write_nothing(tmp_path):
    path = tmp_path / "ix"
    Index.create(path, CONFIG, store="exact").close()
    before = sorted(p.name for p in path.iterdir())
    with Index.open(path, mode="r") as reader:
        assert len(reader) == 0
        assert (reader.search([_docs(1, 0)[0]], k=2).ids == -1).all()
    assert sorted(p.name for p in path.iterdir()) == before


def test_superseded_files_stay_for_a_grace_period(tmp_path, monkeypatch):
    """A reader that read the previous manifest can still open its files after the next
    commit (they are deleted GRACE_S seconds later, or when the writer closes)."""
    import muvera.index.manifest as mf
    from muvera.index.loading import _load_files

    path = tmp_path / "ix"
    docs = _docs(6, 4)
    with Index.create(path, CONFIG, store="exact") as writer:
        writer.add([0, 1, 2], docs[:3])
        old = mf.read_manifest(path)  # a reader got this far ...
        writer.add([3], docs[3:4])  # ... when the writer committed
        manifest, _, _, records = _load_files(path, old, {})  # its files are still there
        assert len(records) == 3 and manifest["generation"] == old["generation"]
        monkeypatch.setattr(mf, "GRACE_S", 0.0)
        writer.add([4], docs[4:5])  # past the grace period: the older files go
        assert not (path / old["state"]).exists()
        monkeypatch.undo()
        writer.add([5], docs[5:6])
        previous = mf.read_manifest(path)["state"]
    assert sorted(p.name for p in path.glob("state-*.npz")) == [previous]  # closed: tidy
