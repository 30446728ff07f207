"""muvera.Index: two-stage search correctness per store, persistence, safety, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import ragged, store_args

import muvera.index.manifest
import muvera.stores.local
from muvera import FDEConfig, Index, MuveraError, maxsim

pytest.importorskip("hnswlib")
STORES = ["exact", "hnswlib", "qdrant", "qdrant-edge"]
D = 16


def _docs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    return ragged(rng, rng.integers(3, 25, n), D)


def _create(tmp_path, store, name="ix", **kwargs):
    kind, options = store_args(store, tmp_path)
    if options is not None:
        kwargs.setdefault("store_options", options)
    return Index.create(
        tmp_path / name, FDEConfig(dimension=D, num_repetitions=8), store=kind, **kwargs
    )


@pytest.mark.parametrize("store", STORES)
def test_rerank_over_all_candidates_equals_exact_maxsim(tmp_path, store, maxsim_kernel):
    docs = _docs()
    with _create(tmp_path, store) as index:
        index.add([f"d{i}" for i in range(len(docs))], docs)
        queries = [d[:4] for d in docs[:10]]
        result = index.search(queries, k=5, candidates=len(docs))
        assert store.startswith("qdrant") or index.token_dtype == np.float16  # the default
        exact = maxsim(queries, docs)
        expect = np.argsort(-exact, axis=1, kind="stable")[:, :5]
        assert result.ids.dtype == object and result.scores.dtype == np.float32
        stages = {"qdrant_ms"} if store.startswith("qdrant") else {"candidates_ms", "rerank_ms"}
        assert set(result.timings) == {"fde_ms"} | stages  # each stage's milliseconds
        assert all(v >= 0 for v in result.timings.values())
        for i in range(len(queries)):
            assert [int(x[1:]) for x in result.ids[i]] == expect[i].tolist()
            # float16 token storage: scores within its rounding
            np.testing.assert_allclose(result.scores[i], exact[i, expect[i]], atol=0.02)


@pytest.mark.parametrize("store", STORES)
def test_a_batch_equals_its_queries_one_at_a_time(tmp_path, store, maxsim_kernel):
    """The batch re-rank (every query's candidates in one kernel call) gives each query the
    ids and scores it gets alone, deleted documents included."""
    docs = _docs(150, seed=3)
    with _create(tmp_path, store) as index:
        index.add(list(range(len(docs))), docs)
        index.delete(list(range(0, 150, 7)))
        rng = np.random.default_rng(4)
        queries = [d[: rng.integers(1, 6)] for d in docs[::9]]
        batch = index.search(queries, k=7, candidates=40)
        for i, query in enumerate(queries):
            alone = index.search([query], k=7, candidates=40)
            assert batch.ids[i].tolist() == alone.ids[0].tolist()
            np.testing.assert_array_equal(batch.scores[i], alone.scores[0])


@pytest.mark.parametrize("store", ["exact", "hnswlib-vectors", "qdrant", "qdrant-edge"])
def test_fde_only_matches_brute_force_fde(tmp_path, store):
    docs = _docs(60)
    with _create(tmp_path, store) as index:
        index.add(list(range(60)), docs)
        queries = [d[:3] for d in docs[:5]]
        result = index.search(queries, k=4, rerank=False)
        enc = index.encoder
        fde = enc.encode_queries(queries) @ enc.encode_documents(docs).T
        assert result.ids.dtype == np.int64
        np.testing.assert_array_equal(result.ids, np.argsort(-fde, axis=1, kind="stable")[:, :4])
        np.testing.assert_allclose(
            result.scores, np.sort(fde, axis=1)[:, ::-1][:, :4], rtol=1e-4, atol=1e-4
        )


def test_fde_only_scores_of_graph_files_without_vectors_are_on_the_codes(tmp_path):
    """The default hnswlib store keeps no vectors in its graph files: FDE-only scores are
    inner products with the codes times their scales (float32), ranked by them."""
    docs = _docs(60)
    with _create(tmp_path, "hnswlib") as index:
        index.add(list(range(60)), docs)
        assert index.store.graph_vectors is False and index.store._graph.links_file
        queries = [d[:3] for d in docs[:5]]
        result = index.search(queries, k=4, rerank=False)
        graph, q = index.store._graph, index.encoder.encode_queries(queries)
        dequantized = graph.codes.astype(np.float32) * graph.meta[:, :1]
        fde = q @ dequantized.T
        order = np.argsort(graph.labels)
        want = np.take_along_axis(fde[:, order], result.ids, axis=1)
        np.testing.assert_allclose(result.scores, want, rtol=1e-5, atol=1e-5)
        top = np.sort(fde, axis=1)[:, ::-1][:, :4]
        np.testing.assert_allclose(result.scores, top, rtol=1e-5, atol=1e-5)
        exact = q @ index.encoder.encode_documents(docs).T  # close to the float32 FDEs'
        np.testing.assert_allclose(result.scores, np.sort(exact, axis=1)[:, ::-1][:, :4], rtol=0.05)


@pytest.mark.parametrize("store", STORES)
def test_k_beyond_the_documents_is_clamped_and_gaps_are_padded(tmp_path, store):
    """k and candidates above the number of documents are clamped to it (a huge k costs
    what the index holds); fewer hits than columns are padded with -1 / -inf."""
    docs = _docs(3)
    with _create(tmp_path, store) as index:
        assert (index.search([docs[0]], k=5, candidates=5).ids == -1).all()  # empty: 1 column
        index.add([1, 2, 3], docs)
        result = index.search([docs[0]], k=5, candidates=5)
        assert result.ids.shape == (1, 3) and sorted(result.ids[0].tolist()) == [1, 2, 3]
        huge = index.search([docs[0]], k=10**12, candidates=10**12)
        assert huge.ids.shape == (1, 3) and huge.ids[0, 0] == result.ids[0, 0]
        assert index.search_exact([docs[0]], k=10**12).ids.shape == (1, 3)
        index.delete([2])
        result = index.search([docs[0]], k=5, candidates=5)
        assert result.ids.shape == (1, 2) and -1 not in result.ids


@pytest.mark.parametrize("store", STORES)
def test_upsert_delete_and_payloads(tmp_path, store):
    docs = _docs(30)
    with _create(tmp_path, store) as index:
        index.add(list(range(30)), docs, payloads=[{"n": i} for i in range(30)])
        assert len(index) == 30 and 7 in index
        index.delete([7, 8])
        assert len(index) == 28 and 7 not in index
        result = index.search([docs[7]], k=3, with_payloads=True)
        assert 7 not in result.ids[0].tolist()
        index.upsert([9, 100], [docs[7], docs[0]], payloads=[{"n": "new"}, None])
        result = index.search([docs[7]], k=1, candidates=30, with_payloads=True)
        assert result.ids[0, 0] == 9 and result.payloads[0][0] == {"n": "new"}
        assert len(index) == 29
        with pytest.raises(MuveraError, match="unknown ids"):
            index.delete([7])
        with pytest.raises(MuveraError, match="already in the index; use upsert"):
            index.add([9], [docs[1]])


def test_bad_input(tmp_path):
    docs = _docs(10)
    with _create(tmp_path, "exact") as index:
        index.add(list(range(10)), docs)
        bad = [
            (lambda: index.add([1, 2], docs[:1]), "got 2 ids for 1 documents"),
            (lambda: index.add([20, 20], docs[:2]), "appears twice"),
            (lambda: index.add(["x"], docs[:1]), "this index uses int ids"),
            (lambda: index.add([True], docs[:1]), "must be an int or a str"),
            (
                lambda: index.add([30], [np.ones((2, D + 1), np.float32)]),
                "token dimension 17, expected 16",
            ),
            (lambda: index.add([30], [np.zeros((0, D), np.float32)]), "document 0 has no tokens"),
            (
                lambda: index.add([30, 31], [docs[0], np.full((2, D), np.nan, np.float32)]),
                "item 1 has NaN",
            ),
            (
                lambda: index.add([30, 31], [docs[0], np.full((2, D), 7e4, np.float32)]),
                r"document 1 has token values beyond float16's range",
            ),
            (
                lambda: index.add([30], docs[:1], payloads=[{"x": object()}]),
                "not JSON-serialisable",
            ),
            (lambda: index.add([30], docs[:1], payloads=["text"]), "must be a dict"),
            (lambda: index.search([np.zeros((0, D), np.float32)]), "query 0 has no tokens"),
            (lambda: index.search([docs[0]], k=0), "k must be a positive int"),
            (lambda: index.search([docs[0]], query_filter={"x": 1}), "unknown clause"),
            (lambda: index.delete("abc"), "must be a list"),
        ]
        for call, message in bad:
            with pytest.raises(MuveraError, match=message):
                call()
        assert len(index) == 10  # nothing was half-added
        assert index.search([docs[3]], k=1).ids[0, 0] == 3
    with _create(tmp_path, "exact", name="wide", token_dtype="float32") as index:
        index.add([1], [np.full((2, D), 7e4, np.float32)])  # float32 storage takes it
        assert index.tokens(1).max() == np.float32(7e4)


def test_create_and_open_errors(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(MuveraError, match="not an empty directory"):
        Index.create(tmp_path / "full", FDEConfig(dimension=D))
    with pytest.raises(MuveraError, match="unknown store"):
        Index.create(tmp_path / "a", FDEConfig(dimension=D), store="faiss")
    with pytest.raises(MuveraError, match="bad options for the hnswlib store"):
        Index.create(tmp_path / "b", FDEConfig(dimension=D), store_options={"m": 4})
    with pytest.raises(MuveraError, match="no muvera index"):
        Index.open(tmp_path / "nothing")
    with pytest.raises(MuveraError, match="token_dtype"):
        Index.create(tmp_path / "c", FDEConfig(dimension=D), token_dtype="int2")


@pytest.mark.parametrize("store", ["exact", "hnswlib"])
def test_persistence_reopen_append_and_versions(tmp_path, store):
    docs = _docs(40)
    with _create(
        tmp_path, store, store_options={"ef": 77} if store == "hnswlib" else None
    ) as index:
        index.add([f"d{i}" for i in range(20)], docs[:20], payloads=[{"i": i} for i in range(20)])
        before = index.search([docs[3]], k=5)
    with Index.open(tmp_path / "ix") as index:
        assert len(index) == 20
        np.testing.assert_array_equal(index.search([docs[3]], k=5).ids, before.ids)
        if store == "hnswlib":
            assert index.store.ef == 77 and index.store.hnswlib_index.ef == 77  # restored on load
        index.add([f"d{i}" for i in range(20, 40)], docs[20:])  # grows past the initial capacity
        assert len(index) == 40
        np.testing.assert_allclose(index.tokens("d5"), docs[5], atol=1e-3)
    manifest_path = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(MuveraError, match=r"format version 99.*upgrade muvera"):
        Index.open(tmp_path / "ix")


def test_one_writer_many_readers(tmp_path):
    docs = _docs(5)
    writer = _create(tmp_path, "exact")
    writer.add([0, 1], docs[:2])
    with pytest.raises(MuveraError, match="open for writing elsewhere"):
        Index.open(tmp_path / "ix")
    reader = Index.open(tmp_path / "ix", mode="r")
    assert len(reader) == 2
    with pytest.raises(MuveraError, match="read-only"):
        reader.add([5], docs[:1])
    writer.add([2], docs[2:3])
    assert len(Index.open(tmp_path / "ix", mode="r")) == 3
    writer.close()
    with Index.open(tmp_path / "ix") as again:  # the lock is free once the writer closes
        assert len(again) == 3
    with pytest.raises(MuveraError, match=r"read-only|mode"):
        writer.add([9], docs[:1])


@pytest.mark.parametrize("store", ["exact", "hnswlib"])
@pytest.mark.parametrize("where", ["store", "commit"])
def test_crash_in_the_middle_of_add_keeps_the_previous_index(tmp_path, monkeypatch, store, where):
    docs = _docs(30)
    index = _create(tmp_path, store)
    index.add(list(range(20)), docs[:20])
    expect = index.search([docs[4]], k=3).ids.copy()

    def boom(*args, **kwargs):
        raise OSError("power cut")

    if where == "store":
        monkeypatch.setattr(type(index.store), "add", boom)
    else:
        monkeypatch.setattr(muvera.index.manifest, "atomic_write_json", boom)
    with pytest.raises(OSError, match="power cut"):
        index.add(list(range(20, 30)), docs[20:])
    monkeypatch.undo()
    assert len(index) == 20  # in memory: reloaded from the last commit
    np.testing.assert_array_equal(index.search([docs[4]], k=3).ids, expect)
    index.close()
    with Index.open(tmp_path / "ix") as reopened:  # on disk: the previous generation
        assert len(reopened) == 20
        np.testing.assert_array_equal(reopened.search([docs[4]], k=3).ids, expect)
        reopened.add(list(range(20, 30)), docs[20:])  # and writing goes on cleanly
        assert len(reopened) == 30
        np.testing.assert_allclose(reopened.tokens(25), docs[25], atol=1e-3)


def test_delete_compacts_once_half_the_tokens_are_dead(tmp_path):
    docs = _docs(40)
    with _create(tmp_path, "exact", token_dtype="float32") as index:
        index.add(list(range(40)), docs)
        size = index.store._tokens.committed
        index.delete(list(range(5)))
        assert index.store._tokens.committed == size  # few dead vectors: no rewrite yet
        index.delete(list(range(5, 30)))
        assert index.store._tokens.committed < size / 2  # compacted
        np.testing.assert_array_equal(index.tokens(35), docs[35])
        assert index.search([docs[33]], k=1).ids[0, 0] == 33


def test_compaction(tmp_path):
    docs = _docs(50)
    with _create(tmp_path, "exact", token_dtype="float32") as index:
        index.add(list(range(50)), docs)
        index.delete(list(range(0, 50, 3)))  # about a third: below the automatic threshold
        before = index.search([d[:3] for d in docs[1:6]], k=4)
        size = index.store._tokens.committed
        index.compact()
        assert index.store._tokens.committed < size
        after = index.search([d[:3] for d in docs[1:6]], k=4)
        np.testing.assert_array_equal(before.ids, after.ids)
        np.testing.assert_array_equal(index.tokens(7), docs[7])  # float32: exact
    with Index.open(tmp_path / "ix", mode="r") as reopened:
        np.testing.assert_array_equal(reopened.tokens(49), docs[49])
        files = {p.name for p in (tmp_path / "ix").iterdir()}
        assert "tokens.bin" not in files  # the old token file is gone after the commit


def test_torch_and_padded_queries(tmp_path):
    docs = _docs(20)
    with _create(tmp_path, "exact") as index:
        index.add(list(range(20)), docs)
        from helpers import pad

        padded, lengths = pad([d[:5] for d in docs[:3]], D, fill=9.0)
        a = index.search(padded, k=3, lengths=lengths)
        b = index.search([d[:5] for d in docs[:3]], k=3)
        np.testing.assert_array_equal(a.ids, b.ids)
        torch = pytest.importorskip("torch")
        c = index.search([torch.from_numpy(d[:5]) for d in docs[:3]], k=3)
        np.testing.assert_array_equal(c.ids, b.ids)


def test_text_convenience_with_a_model(tmp_path):
    pytest.importorskip("transformers")
    from model_fixtures import pylate_model

    from muvera import ColBERT

    pylate_model(tmp_path / "model", n_dense=1)
    model = ColBERT(tmp_path / "model", device="cpu")
    texts = ["the cat sat on the mat", "a dog ran in the park", "hello world", "one two three"]
    index = Index.create(tmp_path / "ix", FDEConfig(dimension=model.dimension), store="exact")
    index.add_texts(model, ["a", "b", "c", "d"], texts, payloads=[{"k": 1}, None, None, None])
    queries = ["the dog in the park", "hello world"]
    result = index.search_texts(model, queries, k=2, candidates=4)
    exact = maxsim(model.encode_queries(queries), model.encode_documents(texts))
    assert [result.ids[i, 0] for i in range(2)] == ["abcd"[j] for j in exact.argmax(axis=1)]
    assert result.payloads[0][0]["text"] in texts
    assert index.records.payloads[0] == {"k": 1, "text": texts[0]}
    index.add_texts(model, ["e"], ["no text kept"], store_text=False)
    assert index.records.payloads[-1] is None
    with pytest.raises(MuveraError, match=r"gives 24-d token vectors; this index holds 16-d"):
        Index.create(tmp_path / "ix2", FDEConfig(dimension=16), store="exact").add_texts(
            model, ["x"], ["y"]
        )


@pytest.mark.parametrize("store", STORES)
def test_search_exact_is_brute_force_maxsim(tmp_path, store, monkeypatch, maxsim_kernel):
    monkeypatch.setattr(muvera.stores.local, "EXHAUSTIVE_SIMS", 300)  # many small blocks
    rng = np.random.default_rng(3)
    docs = [rng.standard_normal((int(n), 16)).astype(np.float32) for n in rng.integers(1, 30, 120)]
    queries = [rng.standard_normal((int(n), 16)).astype(np.float32) for n in (1, 4, 9)]
    kind, options = store_args(store, tmp_path)
    index = Index.create(
        tmp_path / "ix",
        FDEConfig(dimension=16),
        store=kind,
        store_options=options,
        token_dtype="float32",  # exact scores (the default, float16, is tested elsewhere)
    )
    index.add(list(range(120)), docs)
    index.delete(list(range(0, 120, 3)))  # holes in the token file
    index.upsert([4, 5], [docs[0], docs[1]])  # moved to its end
    truth = {i: docs[i] for i in index.ids}
    truth[4], truth[5] = docs[0], docs[1]
    live = index.ids
    exact = maxsim(queries, [truth[i] for i in live])
    result = index.search_exact(queries, k=15, with_payloads=True)
    order = np.argsort(-exact, axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(result.ids, np.array(live)[order])
    # qdrant keeps float16 tokens (Qdrant's engine also multiplies them in lower precision)
    tol = (2e-3, 1e-3) if store.startswith("qdrant") else (1e-5, 1e-7)
    np.testing.assert_allclose(result.scores, np.take_along_axis(exact, order, 1),
                               atol=tol[0], rtol=tol[1])  # fmt: skip
    clamped = index.search_exact(queries[:1], k=200)  # more than the corpus: clamped
    assert clamped.ids.shape == (1, len(live)) and np.isfinite(clamped.scores).all()
    with pytest.raises(MuveraError, match="k must be a positive int"):
        index.search_exact(queries, k=0)
    with pytest.raises(MuveraError, match="query 0 has no tokens"):
        index.search_exact([np.zeros((0, 16), np.float32)])


def test_metadata_persists_and_is_validated(tmp_path):
    index = Index.create(tmp_path / "ix", FDEConfig(dimension=4), store="exact", metadata={"m": 1})
    index.update_metadata({"model": "x"})
    index.close()
    reopened = Index.open(tmp_path / "ix", mode="r")
    assert reopened.metadata == {"m": 1, "model": "x"}
    with pytest.raises(MuveraError, match="open read-only"):
        reopened.update_metadata({"a": 1})
    with pytest.raises(MuveraError, match="metadata is not JSON-serialisable"):
        Index.create(tmp_path / "ix2", FDEConfig(dimension=4), metadata={"a": object()})
    writer = Index.open(tmp_path / "ix")
    with pytest.raises(MuveraError, match="metadata must be a dict"):
        writer.update_metadata(["no"])
    assert writer.metadata == {"m": 1, "model": "x"}


def test_hnswlib_ef_can_be_raised_when_opening(tmp_path):
    pytest.importorskip("hnswlib")
    rng = np.random.default_rng(5)
    docs = ragged(rng, [6] * 40, 8)
    with Index.create(tmp_path / "ix", FDEConfig(dimension=8)) as index:
        index.add(list(range(40)), docs)
    reader = Index.open(tmp_path / "ix", mode="r", store_options={"ef": 300})
    assert reader.store.ef == 300
    assert reader.search([docs[3]], k=1).ids[0, 0] == 3
    assert Index.open(tmp_path / "ix", mode="r").store.ef == 100  # not persisted by a reader
    with pytest.raises(MuveraError, match="ef must be a positive int"):
        Index.open(tmp_path / "ix", mode="r", store_options={"ef": 0})
    with pytest.raises(MuveraError, match=r"store_options \['M'\] cannot be changed"):
        Index.open(tmp_path / "ix", mode="r", store_options={"M": 4})
    exact = Index.create(tmp_path / "ex", FDEConfig(dimension=8), store="exact")
    exact.close()
    with pytest.raises(
        MuveraError, match="cannot be changed when opening an index with the exact store"
    ):
        Index.open(tmp_path / "ex", mode="r", store_options={"ef": 10})


@pytest.mark.parametrize("form", ["lengths", "mask", "tokenbatch"])
def test_add_takes_a_padded_batch_with_lengths_or_mask(tmp_path, form):
    """Padding never becomes tokens: a padded batch with lengths=/mask= (or a validated
    TokenBatch) stores exactly the list form's tokens and searches identically."""
    from muvera.batch import TokenBatch

    rng = np.random.default_rng(5)
    docs = [rng.standard_normal((n, 8)).astype(np.float32) for n in (3, 6, 1, 4)]
    padded = np.full((4, 6, 8), 7.0, np.float32)  # padding that would change MaxSim
    for i, d in enumerate(docs):
        padded[i, : len(d)] = d
    lengths = np.array([len(d) for d in docs])
    config = FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2)
    with Index.create(tmp_path / "list", config, store="exact", token_dtype="float32") as a:
        a.add(["a", "b", "c", "d"], docs)
        want = a.search([docs[1][:2]], k=4, candidates=4)
    with Index.create(tmp_path / form, config, store="exact", token_dtype="float32") as b:
        if form == "lengths":
            b.add(["a", "b", "c", "d"], padded, lengths=lengths)
        elif form == "mask":
            b.add(["a", "b", "c", "d"], padded, mask=np.arange(6)[None, :] < lengths[:, None])
        else:
            b.add(["a", "b", "c", "d"], TokenBatch.from_items(docs))
        for i, d in enumerate(docs):
            np.testing.assert_array_equal(b.tokens("abcd"[i]), d)
        got = b.search([docs[1][:2]], k=4, candidates=4)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.scores, want.scores)
        with pytest.raises(MuveraError, match="outside"):
            b.add(["x"], padded[:1], lengths=np.array([7]))
        with pytest.raises(MuveraError, match="document 0 has no tokens"):
            b.add(["x"], padded[:1], lengths=np.array([0]))
        with pytest.raises(MuveraError, match="only to a padded"):
            b.add(["x"], docs[:1], lengths=np.array([3]))


def test_a_huge_k_runs_in_bounded_memory(tmp_path):
    """search(k=10**9, candidates=10**9) on a small index, in a child process whose address
    space is capped at 4 GiB: it returns (before the clamp it allocated until killed)."""
    import subprocess
    import sys

    script = f"""
import resource, numpy as np
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from muvera import FDEConfig, Index
rng = np.random.default_rng(0)
docs = [rng.standard_normal((5, 16)).astype(np.float32) for _ in range(17)]
with Index.create({str(tmp_path / "ix")!r}, FDEConfig(dimension=16), store="exact") as index:
    index.add(list(range(17)), docs)
    hits = index.search([docs[3]], k=10**9, candidates=10**9)
    exact = index.search_exact([docs[3]], k=10**9)
print(hits.ids.shape, exact.ids.shape, hits.ids[0, 0])
"""
    import os

    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # ASan reserves >4 GiB
    env.pop("MUVERA_NATIVE_DIR", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["(1,", "17)", "(1,", "17)", "3"]
