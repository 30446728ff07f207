"""Postings of the token cells and the probe that reads them (large indexes' first stage):
kernels against literal references, bad input, and the index keeping them in step with
adds, deletes, upserts and compaction."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ragged
from hypothesis import example, given, settings
from hypothesis import strategies as st

from muvera import FDEConfig, Index, MuveraError, native
from muvera.cells import MIN_FIT_TOKENS
from muvera.index.results import CELLS_CANDIDATES, WIDE_CANDIDATES
from muvera.postings import Postings, probe, probe_best
from muvera.stores import cell_file

RUNNABLE = [v for v in native.VARIANTS if native.load_variant(v) is not None]
D = 8


def literal_postings(codes, n_cells, labels, offsets, lengths):
    """cell -> labels having a token there, each once, in the order given."""
    lists: list[list[int]] = [[] for _ in range(n_cells)]
    for label, off, n in zip(labels, offsets, lengths, strict=True):
        for c in dict.fromkeys(int(x) for x in codes[off : off + n]):
            lists[c].append(int(label))
    return lists


def literal_probe(table, n_tokens, lists, n_probe):
    """Per document reached: sum over query tokens of the best probed cell holding it."""
    n_cells = table.shape[0]
    probed = []
    for i in range(n_tokens):  # best first; ties: the lower cell
        order = sorted(range(n_cells), key=lambda c: (-float(table[c, i]), c))
        probed.append(order[: min(n_probe, n_cells)])
    reached = {d for cells in probed for c in cells for d in lists[c]}
    scores = {}
    for d in reached:
        total = np.float32(0)
        for i, cells in enumerate(probed):
            hits = [table[c, i] for c in cells if d in lists[c]]
            if hits:
                total = np.float32(total + np.float32(max(hits)))
        scores[d] = float(total)
    return scores


def _random_store(rng, n_cells, n_docs, max_len=12):
    lengths = rng.integers(0, max_len, n_docs).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    codes = rng.integers(0, n_cells, int(lengths.sum())).astype(np.uint16)
    return codes, offsets, lengths


def _build(codes, n_cells, labels, offsets, lengths, how):
    if how == "numpy":
        return Postings.build(codes, n_cells, labels, offsets, lengths, use_native=False)
    kernel = native.load_variant(how)
    bounds = np.zeros(n_cells + 1, np.int64)
    total = kernel.cell_postings(codes, n_cells, labels, offsets, lengths, bounds, None)
    out = np.empty(total, np.int32)
    assert kernel.cell_postings(codes, n_cells, labels, offsets, lengths, bounds, out) == total
    return Postings(bounds, out)


@pytest.mark.parametrize("seed", range(4))
def test_postings_equal_the_literal_reference(seed):
    rng = np.random.default_rng(seed)
    n_cells = int(rng.integers(1, 50))
    codes, offsets, lengths = _random_store(rng, n_cells, 80)
    keep = np.flatnonzero(rng.random(80) < 0.7)  # dead documents are left out
    want = literal_postings(codes, n_cells, keep, offsets[keep], lengths[keep])
    for how in ["numpy", *RUNNABLE]:
        got = _build(codes, n_cells, keep, offsets[keep], lengths[keep], how)
        assert got.n_cells == n_cells
        lists = [got.labels[got.bounds[c] : got.bounds[c + 1]].tolist() for c in range(n_cells)]
        assert lists == want, how


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n_probe=st.integers(1, 6),
    n_tokens=st.integers(0, 9),
    split=st.integers(0, 60),
)
def test_probe_equals_the_literal_reference(seed, n_probe, n_tokens, split):
    rng = np.random.default_rng(seed)
    n_cells, n_docs = int(rng.integers(1, 30)), 60
    codes, offsets, lengths = _random_store(rng, n_cells, n_docs)
    table = rng.standard_normal((n_cells, 32)).astype(np.float32)
    table[rng.integers(0, n_cells, 3), 0] = 0.5  # ties
    parts = [np.arange(split), np.arange(split, n_docs)]  # two disjoint postings
    lists = [Postings.build(codes, n_cells, p, offsets[p], lengths[p]) for p in parts]
    whole = literal_postings(codes, n_cells, np.arange(n_docs), offsets, lengths)
    want = literal_probe(table, n_tokens, whole, n_probe)
    results = [probe(table, n_tokens, lists, n_probe, n_docs, use_native=False)]
    results.append(probe(table, n_tokens, lists, n_probe, n_docs))
    scratch = (np.zeros(n_docs, np.float32), np.zeros(n_docs, np.int32), np.empty(n_docs, np.int64))
    for _ in range(2):  # reused: left zero by the first call
        results.append(probe(table, n_tokens, lists, n_probe, n_docs, scratch=scratch))
        assert not scratch[0].any() and not scratch[1].any()
    for labels, scores in results:
        assert sorted(labels.tolist()) == sorted(want)
        np.testing.assert_allclose(scores, [want[d] for d in labels.tolist()], rtol=1e-6)
    for labels, scores in results[1:]:  # same order of first reach
        np.testing.assert_array_equal(results[0][0], labels)
        np.testing.assert_array_equal(results[0][1], scores)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n_probe=st.integers(1, 4),
    n_tokens=st.integers(0, 9),
    want=st.integers(0, 70),
    split=st.integers(0, 60),
)
@example(seed=0, n_probe=1, n_tokens=1, want=1, split=0)  # every document in one list
def test_probe_best_keeps_the_best_live_documents_ties_to_the_lower_label(
    seed, n_probe, n_tokens, want, split
):
    rng = np.random.default_rng(seed)
    n_cells, n_docs = int(rng.integers(1, 30)), 60
    codes, offsets, lengths = _random_store(rng, n_cells, n_docs)
    # quarters: sums are exact in float32 and tie often
    table = (rng.integers(-4, 5, (n_cells, 32)) / 4).astype(np.float32)
    parts = [np.arange(split), np.arange(split, n_docs)]  # two disjoint postings
    lists = [Postings.build(codes, n_cells, p, offsets[p], lengths[p]) for p in parts]
    alive = rng.random(n_docs) < 0.7
    whole = literal_postings(codes, n_cells, np.arange(n_docs), offsets, lengths)
    scores = literal_probe(table, n_tokens, whole, n_probe)
    live = [d for d in scores if alive[d]]
    expected = sorted(sorted(live, key=lambda d: (-float(scores[d]), d))[:want])
    got = probe_best(table, n_tokens, lists, n_probe, alive, want, use_native=False)
    assert got.tolist() == expected
    scratch = (np.zeros(n_docs, np.float32), np.zeros(n_docs, np.int32), np.empty(n_docs, np.int64))
    for threads in (1, 2, 3, 7, None):  # ranges of documents per thread: the same labels
        for one in (lists, lists[1:] if split == 0 else lists):  # two lists, or one
            got = probe_best(table, n_tokens, one[::-1] if threads == 3 else one, n_probe,
                             alive, want, scratch=scratch, threads=threads)  # fmt: skip
            assert got.dtype == np.int64 and got.tolist() == expected, threads
            assert not scratch[0].any() and not scratch[1].any()


@pytest.mark.parametrize("variant", RUNNABLE)
def test_probe_best_kernel_orders_signed_zeros_and_checks_its_input(variant):
    kernel = native.load_variant(variant)
    # one query token probing both cells: cell 0 holds documents 1, 0, 5, cell 1 2, 3, 4
    n = 6
    bounds = np.array([0, 3, 6], np.int64)
    postings = np.array([1, 0, 5, 2, 3, 4], np.int32)
    cells = np.array([[0, 1]], np.int64)
    alive = np.array([1, 1, 1, 0, 1, 1], np.uint8)

    def run(values, want, threads=1, lists=None):
        score, stamp = np.zeros(n, np.float32), np.zeros(n, np.int32)
        out = np.empty(want, np.int64)
        got = kernel.probe_best(lists or [(bounds, postings)], cells,
                                np.array([values], np.float32), score, stamp,
                                np.empty(n, np.int64), alive, out, threads)  # fmt: skip
        return got, sorted(out[: max(got, 0)].tolist()), score, stamp

    # documents 1, 0, 5 get -0.0 (cell 0); 2, 3, 4 get 1.0 (cell 1; 3 is dead)
    for threads in (1, 2, 4):
        got, kept, score, stamp = run([-0.0, 1.0], 3, threads)
        assert got == 3 and kept == [0, 2, 4]  # 2, 4, then the lowest label of the -0.0s
        assert not score.any() and not stamp.any()
        assert run([-0.0, 1.0], 10, threads)[:2] == (5, [0, 1, 2, 4, 5])  # every live one
        assert run([-0.0, 1.0], 0, threads)[:2] == (0, [])
    bad = np.array([1, 0, 9, 2, 3, 4], np.int32)  # document 9 of 6
    assert run([0.5, 1.0], 2, 2, [(bounds, bad)])[0] == -2
    assert run([0.5, 1.0], 2, 1, [(np.array([0, 3, 7]), postings)])[0] == -2  # bound past
    two = [(bounds, postings), (bounds, postings)]
    assert run([0.5, 1.0], 2, 1, two)[:2] == (2, [2, 4])  # a document in both: once


def test_probe_best_asks_for_no_more_than_there_are_documents():
    table = np.ones((3, 32), np.float32)
    post = Postings(np.array([0, 2, 2, 2]), np.array([1, 3], np.int32))
    for use_native in (True, False):  # 10^12 kept slots would not fit in memory
        got = probe_best(table, 2, [post], 1, np.ones(5, bool), 10**12, use_native=use_native)
        assert got.tolist() == [1, 3]


def test_probe_best_raises_on_bad_postings_and_leaves_its_scratch_zero():
    table = np.ones((3, 32), np.float32)
    good = Postings(np.array([0, 2, 2, 2]), np.array([1, 3], np.int32))
    bad_label = Postings(np.array([0, 1, 1, 1]), np.array([7], np.int32))
    scratch = (np.zeros(5, np.float32), np.zeros(5, np.int32), np.empty(5, np.int64))
    for use_native in (True, False):
        with pytest.raises(MuveraError, match="out of range"):
            probe_best(table, 2, [good, bad_label], 1, np.ones(5, bool), 3,
                       use_native=use_native, scratch=scratch)  # fmt: skip
    assert not scratch[0].any() and not scratch[1].any()
    with pytest.raises(MuveraError, match="scratch"):
        probe_best(table, 2, [good], 1, np.ones(4, bool), 3, scratch=scratch)
    with pytest.raises(MuveraError, match="cell count"):
        probe_best(table, 2, [Postings(np.array([0, 1]), np.array([0], np.int32))], 1,
                   np.ones(5, bool), 3)  # fmt: skip


@pytest.mark.parametrize("use_native", [True, False])
def test_bad_codes_spans_and_postings_raise(use_native):
    codes = np.array([0, 1, 2, 9], np.uint16)
    one = (np.array([0]), np.array([0]), np.array([4]))
    with pytest.raises(MuveraError, match="does not fit"):
        Postings.build(codes, 5, *one, use_native=use_native)  # code 9 of 5 cells
    with pytest.raises(MuveraError, match="does not fit"):
        Postings.build(codes, 10, np.array([0]), np.array([2]), np.array([3]),
                       use_native=use_native)  # fmt: skip
    with pytest.raises(MuveraError, match="does not fit"):
        Postings.build(codes, 10, np.array([-1]), np.array([0]), np.array([2]),
                       use_native=use_native)  # fmt: skip
    table = np.ones((3, 32), np.float32)
    bad_label = Postings(np.array([0, 1, 1, 1]), np.array([7], np.int32))
    with pytest.raises(MuveraError, match="out of range"):
        probe(table, 2, [bad_label], 1, 5, use_native=use_native)
    if use_native:  # bounds are trusted by numpy slicing; the kernel checks them
        bad_bounds = Postings(np.array([0, 9, 9, 9]), np.array([0], np.int32))
        with pytest.raises(MuveraError, match="out of range"):
            probe(table, 2, [bad_bounds], 1, 5)
        # a scratch the failed call wrote into (the good list before the bad one) is zero
        scratch = (np.zeros(5, np.float32), np.zeros(5, np.int32), np.empty(5, np.int64))
        good = Postings(np.array([0, 2, 2, 2]), np.array([1, 3], np.int32))
        with pytest.raises(MuveraError, match="out of range"):
            probe(table, 2, [good, bad_label], 1, 5, scratch=scratch)
        assert not scratch[0].any() and not scratch[1].any()
    with pytest.raises(MuveraError, match="cell count"):
        probe(table, 2, [Postings(np.array([0, 1]), np.array([0], np.int32))], 1, 5)


# -- the index ---------------------------------------------------------------------------


def _corpus(seed, n=420, length=90):
    rng = np.random.default_rng(seed)
    docs = ragged(rng, rng.integers(length // 2, 3 * length // 2, n), D)
    assert sum(map(len, docs)) > MIN_FIT_TOKENS
    return rng, docs


def _queries(rng, docs, picks):
    return [docs[i][:6] + 0.05 * rng.standard_normal((6, D)).astype(np.float32) for i in picks]


def _found(ids, exact):
    return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact, strict=True)])


def _large(monkeypatch):
    """Search as an index beyond SCAN_TOKENS token rows."""
    monkeypatch.setattr("muvera.stores.local.SCAN_TOKENS", 0)


def test_probe_finds_what_the_fde_pool_misses(tmp_path, monkeypatch):
    rng, docs = _corpus(11)
    _large(monkeypatch)
    monkeypatch.setattr("muvera.stores.local.WIDE", 1)  # the FDE's top 40 alone as pool
    with Index.create(tmp_path / "ix", FDEConfig(dimension=D)) as index:
        index.add(list(range(len(docs))), docs)
        queries = _queries(rng, docs, range(0, 420, 21))
        exact = index.search_exact(queries, k=10).ids
        probed = index.search(queries, k=10, candidates=40)
        monkeypatch.setattr(cell_file, "PROBE_DOCS", 0)  # the FDE pool alone
        pool = index.search(queries, k=10, candidates=40)
    got, base = _found(probed.ids, exact), _found(pool.ids, exact)
    assert got >= base + 0.1, (got, base)  # 0.68 vs 0.505 on these noise tokens


def test_the_wide_mode_reranks_more_candidates_by_default(tmp_path, monkeypatch):
    rng, docs = _corpus(13)
    with Index.create(tmp_path / "ix", FDEConfig(dimension=D)) as index:
        index.add(list(range(len(docs))), docs)
        queries = _queries(rng, docs, range(0, 420, 42))
        assert index.store.uses_cells and not index.store.wide
        assert index.default_candidates == CELLS_CANDIDATES == 100
        _large(monkeypatch)  # the same index searched as a large one
        assert index.store.wide and index.default_candidates == WIDE_CANDIDATES == 200
        default = index.search(queries, k=10)
        told = index.search(queries, k=10, candidates=WIDE_CANDIDATES)
        np.testing.assert_array_equal(default.ids, told.ids)
        assert not np.array_equal(default.ids, index.search(queries, k=10, candidates=20).ids)


def _same_as_fresh(index, path, queries):
    """The writer's postings (built, extended, rebuilt) give what a fresh reader's do."""
    mine = index.search(queries, k=10, candidates=30)
    fresh = Index.open(path, mode="r").search(queries, k=10, candidates=30)
    np.testing.assert_array_equal(mine.ids, fresh.ids)
    np.testing.assert_allclose(mine.scores, fresh.scores)
    return mine


def test_postings_follow_adds_deletes_upserts_and_compaction(tmp_path, monkeypatch):
    rng, docs = _corpus(12, n=520)
    _large(monkeypatch)
    path = tmp_path / "ix"
    queries = _queries(rng, docs, range(0, 520, 26))
    with Index.create(path, FDEConfig(dimension=D), "exact") as index:
        index.add(list(range(400)), docs[:400])
        _same_as_fresh(index, path, queries)
        built = index.store.cells._postings
        assert built is not None and built[0] == 400 and built[3] is None
        index.add(list(range(400, 440)), docs[400:440])  # few: a tail of postings
        _same_as_fresh(index, path, queries)
        state = index.store.cells._postings
        assert state[0] == 400 and state[2] == 440 and state[3] is not None
        index.add(list(range(440, 520)), docs[440:520])  # many: one full build again
        _same_as_fresh(index, path, queries)
        assert index.store.cells._postings[0] == 520
        gone = list(range(0, 520, 3))
        index.delete(gone)
        index.upsert([1], [docs[301]])  # id 1 now holds document 301's tokens
        hits = _same_as_fresh(index, path, queries)
        assert not set(gone) & {int(x) for x in hits.ids.ravel()}
        index.compact()  # labels kept: the postings stay valid
        hits = _same_as_fresh(index, path, queries)
        assert not set(gone) & {int(x) for x in hits.ids.ravel()}
        one = index.search([docs[301][:6]], k=2, candidates=30)
        assert {int(x) for x in one.ids[0]} == {1, 301}
    reader = Index.open(path, mode="r")
    again = reader.search(queries, k=10, candidates=30)
    np.testing.assert_array_equal(again.ids, hits.ids)


def test_filtered_search_probes_only_allowed_documents(tmp_path, monkeypatch):
    rng, docs = _corpus(13)
    _large(monkeypatch)
    payloads = [{"odd": i % 2 == 1} for i in range(len(docs))]
    with Index.create(tmp_path / "ix", FDEConfig(dimension=D)) as index:
        index.add(list(range(len(docs))), docs, payloads=payloads)
        index.delete(list(range(1, 100, 4)))
        flt = {"must": [{"key": "odd", "match": {"value": True}}]}
        queries = _queries(rng, docs, range(0, 420, 30))
        hits = index.search(queries, k=10, candidates=40, query_filter=flt)
    got = {int(x) for x in hits.ids.ravel() if x != -1}
    assert got and all(i % 2 == 1 for i in got)
    assert not got & set(range(1, 100, 4))


def test_info_says_which_first_stage_the_cells_run(tmp_path, monkeypatch):
    from muvera.index.info import describe

    _rng, docs = _corpus(14)
    with Index.create(tmp_path / "ix", FDEConfig(dimension=D), "exact") as index:
        index.add(list(range(len(docs))), docs)
        assert "every live document scored" in describe(index)["token_cells"]
        monkeypatch.setattr("muvera.index.info.SCAN_TOKENS", 10)
        assert "probed cells" in describe(index)["token_cells"]
