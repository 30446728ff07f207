"""Index.bulk(): many writes under one commit; readers see nothing until it commits; a
failure inside returns the index to its last commit; commit_every commits on the way."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ragged, store_args

from muvera import FDEConfig, Index, MuveraError

CONFIG = FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2, seed=3)


def _docs(n: int, seed: int = 0) -> list[np.ndarray]:
    return ragged(np.random.default_rng(seed), [3 + i % 5 for i in range(n)], 8)


@pytest.mark.parametrize("store", ["exact", "hnswlib", "qdrant"])
def test_one_commit_for_many_writes_and_readers_see_it_only_then(tmp_path, store):
    kind, options = store_args(store, tmp_path)
    docs = _docs(30)
    path = tmp_path / "ix"
    with Index.create(path, CONFIG, store=kind, store_options=options) as index:
        index.add(list(range(10)), docs[:10])
        first = index.manifest["generation"]
        reader = Index.open(path, mode="r") if kind != "qdrant" else None
        with index.bulk():
            for i in range(10, 30, 5):
                index.add(list(range(i, i + 5)), docs[i : i + 5])
            index.delete([0, 1])
            index.update_payload(2, {"x": 1})
            assert index.manifest["generation"] == first  # nothing committed yet
            assert len(index) == 28 and 17 in index  # the writer's records have them
            if kind != "qdrant":  # local stores' searches too (Qdrant's: committed points)
                assert index.search([docs[17]], k=1, candidates=30).ids[0, 0] == 17
            if reader is not None:
                reader.refresh()
                assert len(reader) == 10 and 17 not in reader
        assert index.manifest["generation"] == first + 1
        assert index.records.payloads[2] == {"x": 1}
        assert index.search([docs[17]], k=1, candidates=30).ids[0, 0] == 17
        if reader is not None:
            assert reader.refresh() and len(reader) == 28
            assert reader.search([docs[17]], k=1, candidates=30).ids[0, 0] == 17
            reader.close()
    if kind != "qdrant":  # (in memory: gone with its client)
        with Index.open(path, mode="r") as again:
            assert len(again) == 28 and 0 not in again and again.records.payloads[2] == {"x": 1}


def test_a_failure_inside_returns_to_the_last_commit(tmp_path):
    docs = _docs(20)
    with Index.create(tmp_path / "ix", CONFIG, store="exact") as index:
        index.add(list(range(5)), docs[:5])

        def failing_bulk() -> None:
            with index.bulk():
                index.add(list(range(5, 10)), docs[5:10])
                index.delete([0])
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            failing_bulk()
        assert len(index) == 5 and 0 in index and 7 not in index
        with index.bulk():  # usable again; a refused write inside keeps the others
            index.add([5], [docs[5]])
            with pytest.raises(MuveraError, match="already"):
                index.add([5], [docs[5]])
            index.add([6], [docs[6]])
        assert sorted(index.ids) == [0, 1, 2, 3, 4, 5, 6]
    with Index.open(tmp_path / "ix", mode="r") as index:
        assert sorted(index.ids) == [0, 1, 2, 3, 4, 5, 6]
        assert index.search([docs[6]], k=1, candidates=7).ids[0, 0] == 6


def test_commit_every_commits_on_the_way(tmp_path):
    docs = _docs(25)
    with Index.create(tmp_path / "ix", CONFIG, store="hnswlib") as index:
        start = index.manifest["generation"]
        with index.bulk(commit_every=10):
            for i in range(25):
                index.add([i], [docs[i]])
                if i == 9:
                    assert index.manifest["generation"] == start + 1
                    with Index.open(tmp_path / "ix", mode="r") as reader:
                        assert len(reader) == 10
        assert index.manifest["generation"] == start + 3  # at 10, 20, and the rest at exit
        for bad in (0, -1, 2.5, True, "10"):
            with pytest.raises(MuveraError, match="commit_every"), index.bulk(commit_every=bad):
                pass


def test_bulk_does_not_nest_and_needs_a_writer(tmp_path):
    with Index.create(tmp_path / "ix", CONFIG, store="exact") as index:
        with index.bulk(), pytest.raises(MuveraError, match="does not nest"), index.bulk():
            pass
        index.add([1], _docs(1))
    reader = Index.open(tmp_path / "ix", mode="r")
    with pytest.raises(MuveraError, match="read-only"), reader.bulk():
        pass
    reader.close()


def test_a_bulk_keeps_its_fdes_in_a_scratch_file_past_the_spill_size(tmp_path, monkeypatch):
    """Past SPILL_BYTES of uncommitted FDEs a writer keeps them in an unlinked scratch
    file, read back in chunks: searched before the commit, inserted by it, nothing left in
    the folder, the same results as when held in memory (one insert thread: the same
    graph)."""
    from muvera.stores import hnsw, hnsw_parts

    docs = _docs(300)
    queries = [docs[i][:2] for i in (3, 60, 170, 299)]
    seen = {}
    for spill in (False, True):
        if spill:
            monkeypatch.setattr(hnsw, "SPILL_BYTES", 0)  # every batch goes to the file
            monkeypatch.setattr(hnsw_parts, "_CHUNK_BYTES", 7 * 4 * 1)  # read back 7 rows
        path = tmp_path / f"ix-{spill}"
        options = {"num_threads": 1}
        with Index.create(path, CONFIG, "hnswlib", store_options=options) as index:
            index.add(list(range(50)), docs[:50])
            files = sorted(p.name for p in path.iterdir())
            with index.bulk():
                for i in range(50, 300, 25):
                    index.add(list(range(i, i + 25)), docs[i : i + 25])
                pending = [batch for _, batch in index.store._pending]
                assert all(isinstance(b, hnsw_parts.Spilled) is spill for b in pending)
                assert (index.store._scratch is not None) is spill
                assert sorted(p.name for p in path.iterdir()) == files  # unlinked
                before = index.search(queries, k=3, candidates=30, rerank=False)
                assert (before.ids >= 50).sum() >= 6  # the uncommitted rows are searched
            assert index.store._scratch is None and not index.store._pending
        with Index.open(path, mode="r") as reader:
            after = reader.search(queries, k=5, rerank=False)
            seen[spill] = (before.ids.tolist(), after.ids.tolist(), after.scores.tolist())
    assert seen[True] == seen[False]


def test_the_spill_size_counts_what_is_held_and_resets_at_each_commit(tmp_path, monkeypatch):
    """The first batches up to SPILL_BYTES stay in memory, the later ones go to the file;
    after the commit the next bulk starts in memory again."""
    from muvera.stores import hnsw, hnsw_parts

    docs = _docs(120)
    with Index.create(tmp_path / "ix", CONFIG, "hnswlib") as index:
        width = index.encoder.output_dimension
        monkeypatch.setattr(hnsw, "SPILL_BYTES", 2 * 10 * 4 * width)  # two batches of 10
        for _ in range(2):
            start = len(index)
            with index.bulk():
                for i in range(start, start + 50, 10):
                    index.add(list(range(i, i + 10)), docs[i : i + 10])
                kinds = [isinstance(b, hnsw_parts.Spilled) for _, b in index.store._pending]
                assert kinds == [False, False, True, True, True]
                assert index.store._held == 2 * 10 * 4 * width
            assert index.store._held == 0 and index.store._scratch is None
        assert len(index) == 100
        hit = index.search([docs[75]], k=1, candidates=100).ids[0, 0]
        assert hit == 75
