"""Payload filters on every store (the same dict syntax), get(), and k > candidates."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import format_version, ragged, store_args

from muvera import FDEConfig, Index, MuveraError, maxsim
from muvera.index.filters import allowed_mask, check_filter

pytest.importorskip("hnswlib")
D = 16
STORES = ["exact", "hnswlib", "qdrant", "qdrant-edge"]
LANGS = ["en", "fr", "de"]


def _payload(i: int) -> dict:
    payload = {"lang": LANGS[i % 3], "year": 1990 + i % 40, "meta": {"n": i % 7}}
    if i % 4 == 0:
        payload["tags"] = ["a", "b"] if i % 8 == 0 else []
    if i % 5 == 0:
        payload["note"] = None
    return payload


FILTERS = [
    {"must": [{"key": "lang", "match": {"value": "en"}}]},
    {"must": [{"key": "year", "range": {"gte": 2000, "lt": 2010}}]},
    {
        "should": [
            {"key": "lang", "match": {"value": "fr"}},
            {"key": "meta.n", "match": {"value": 3}},
        ]
    },
    {"must_not": [{"key": "lang", "match": {"any": ["en", "fr"]}}]},
    {"must": [{"key": "tags", "match": {"value": "a"}}]},
    {"must": [{"is_empty": {"key": "tags"}}], "must_not": [{"is_null": {"key": "note"}}]},
    {
        "must": [
            {"has_id": [3, 8, 100, 150]},
            {"must_not": [{"key": "year", "range": {"lt": 1995}}]},
        ]
    },
    {
        "must": [
            {"key": "lang", "match": {"except": ["de"]}},
            {"key": "year", "range": {"gt": 2025}},
        ]
    },
]


def _expected(f: dict, n: int) -> set[int]:
    mask = allowed_mask(check_filter(f), list(range(n)), [_payload(i) for i in range(n)],
                        np.ones(n, bool))  # fmt: skip
    return set(np.flatnonzero(mask).tolist())


def test_filter_semantics_are_qdrants():
    """Each kind of condition against a literal reading of its rule."""
    n = 200
    p = [_payload(i) for i in range(n)]
    assert _expected(FILTERS[0], n) == {i for i in range(n) if p[i]["lang"] == "en"}
    assert _expected(FILTERS[1], n) == {i for i in range(n) if 2000 <= p[i]["year"] < 2010}
    assert _expected(FILTERS[2], n) == {
        i for i in range(n) if p[i]["lang"] == "fr" or p[i]["meta"]["n"] == 3
    }
    assert _expected(FILTERS[3], n) == {i for i in range(n) if p[i]["lang"] == "de"}
    assert _expected(FILTERS[4], n) == {i for i in range(n) if i % 8 == 0}  # a list matches
    assert _expected(FILTERS[5], n) == {  # missing or [] tags; note not present-and-null
        i for i in range(n) if not p[i].get("tags") and i % 5 != 0
    }
    assert _expected(FILTERS[6], n) == {8, 100, 150}
    assert _expected(FILTERS[7], n) == {i for i in range(n) if p[i]["lang"] != "de" and p[i][
        "year"] > 2025}  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [
        {}, [], "lang", {"must": {}}, {"filter": []}, {"must": [{"key": "x"}]},
        {"must": [{"key": "x", "match": {"value": [1]}}]},
        {"must": [{"key": "x", "match": {"any": 1}}]},
        {"must": [{"key": "x", "range": {"gte": "a"}}]},
        {"must": [{"key": "x", "range": {"between": 1}}]},
        {"must": [{"key": "x", "range": {"lt": float("nan")}}]},
        {"must": [{"has_id": 3}]}, {"must": [{"is_empty": "x"}]}, {"must": [3]},
    ],
)  # fmt: skip
def test_malformed_filters_raise(tmp_path, bad):
    with Index.create(tmp_path / "ix", FDEConfig(dimension=D), store="exact") as index:
        index.add([1], [np.ones((2, D), np.float32)], [{"x": 1}])
        with pytest.raises(MuveraError, match="query_filter"):
            index.search([np.ones((2, D), np.float32)], query_filter=bad)


def _index(tmp_path, store, n):
    kind, options = store_args(store, tmp_path)
    rng = np.random.default_rng(5)
    docs = ragged(rng, rng.integers(3, 12, n), D)
    index = Index.create(
        tmp_path / store, FDEConfig(dimension=D, num_repetitions=8), store=kind,
        store_options=options,
    )  # fmt: skip
    index.add(list(range(n)), docs, [_payload(i) for i in range(n)])
    return index, docs


@pytest.mark.parametrize("store", STORES)
def test_filtered_search_equals_brute_force_over_the_documents_that_pass(tmp_path, store):
    """With every document a candidate, a filtered search is exact MaxSim over the documents
    passing the filter (for every store); search_exact too."""
    n = 160
    index, docs = _index(tmp_path, store, n)
    index.delete([0, 9])
    queries = [d[:3] for d in docs[1:60:6]]
    exact = maxsim(queries, docs)
    with index:
        for f in FILTERS:
            passing = sorted(_expected(f, n) - {0, 9})
            for result in (
                index.search(queries, k=6, candidates=n, query_filter=f, with_payloads=True),
                index.search_exact(queries, k=6, query_filter=f, with_payloads=True),
            ):
                for i in range(len(queries)):
                    order = np.argsort(-exact[i, passing], kind="stable")[:6]
                    want = [passing[j] for j in order]
                    got = [x for x in result.ids[i].tolist() if x != -1]
                    assert set(got) == set(want), (f, i)
                    assert all(
                        p == _payload(d) for d, p in zip(got, result.payloads[i], strict=False)
                    )


@pytest.mark.parametrize("store", STORES)
def test_a_filtered_search_returns_k_hits_while_k_documents_pass(tmp_path, store):
    """The walk looks past excluded documents (or, when few pass, scores them all), so
    default candidates give k hits whenever k documents pass, filtered or not."""
    n = 1200
    index, docs = _index(tmp_path, store, n)
    with index:
        queries = [d[:4] for d in docs[:30]]
        for f in (FILTERS[0], FILTERS[1], FILTERS[6], FILTERS[7]):
            passing = _expected(f, n)
            result = index.search(queries, k=10, query_filter=f)
            for row in result.ids.tolist():
                hits = [x for x in row if x != -1]
                assert len(hits) == min(10, len(passing)) and set(hits) <= passing, f


def test_the_filter_mask_is_cached_per_generation(tmp_path, monkeypatch):
    import muvera.index.reading as reading

    index, docs = _index(tmp_path, "exact", 50)
    calls = []
    original = reading.allowed_mask
    monkeypatch.setattr(reading, "allowed_mask", lambda *a: calls.append(1) or original(*a))
    with index:
        for _ in range(3):
            index.search([docs[0]], k=3, query_filter=FILTERS[0])
        assert len(calls) == 1
        index.add([500], [docs[0]], [{"lang": "en"}])  # a commit: the mask is recomputed
        assert 500 in index.search([docs[0]], k=50, query_filter=FILTERS[0]).ids[0].tolist()
        assert len(calls) == 2


@pytest.mark.parametrize("store", STORES)
def test_get_and_k_beyond_candidates(tmp_path, store):
    index, docs = _index(tmp_path, store, 40)
    with index:
        got = index.get([7, 3])
        assert [d.id for d in got] == [7, 3] and got[0].payload == _payload(7)
        np.testing.assert_allclose(got[1].tokens, docs[3], atol=2e-3)
        with pytest.raises(MuveraError, match=r"unknown ids \[99\]"):
            index.get([3, 99])
        with pytest.raises(MuveraError, match="ids must be a list"):
            index.get("abc")
        wide = index.search([docs[5]], k=30, candidates=10)  # widened to 30 candidates
        assert wide.ids.shape == (1, 30) and -1 not in wide.ids[0].tolist()
        assert wide.ids[0, 0] == 5


@pytest.mark.parametrize("store", STORES)
def test_update_payload_merges_or_replaces_and_filters_follow(tmp_path, store):
    index, docs = _index(tmp_path, store, 30)
    en = {"must": [{"key": "lang", "match": {"value": "en"}}]}
    with index:
        assert index.manifest["format_version"] == format_version(
            index.manifest, 1
        )  # no update: older readers read it
        assert 1 not in index.search([docs[1]], k=30, query_filter=en).ids[0].tolist()
        index.update_payload(1, {"lang": "en", "extra": [1, 2]})
        assert index.get([1])[0].payload == {**_payload(1), "lang": "en", "extra": [1, 2]}
        assert index.search([docs[1]], k=1, query_filter=en).ids[0, 0] == 1
        index.update_payload(2, {"only": True}, replace=True)
        assert index.get([2])[0].payload == {"only": True}
        assert index.manifest["format_version"] == format_version(index.manifest, 2)
        with pytest.raises(MuveraError, match="unknown ids"):
            index.update_payload(999, {"a": 1})
        with pytest.raises(MuveraError, match="not JSON"):
            index.update_payload(3, {"a": float("nan")})
        generation = index.manifest["generation"]
    qdrant = store.startswith("qdrant")
    kwargs = {"store_options": {"client": index.store.client}} if qdrant else {}
    with Index.open(tmp_path / store, mode="r", **kwargs) as reader:
        assert reader.manifest["generation"] == generation
        assert reader.get([1, 2])[1].payload == {"only": True}
        hit = reader.search([docs[1]], k=1, query_filter=en, with_payloads=True)
        assert hit.ids[0, 0] == 1 and hit.payloads[0][0]["extra"] == [1, 2]


def test_a_failed_payload_update_changes_nothing_in_qdrant(tmp_path, monkeypatch):
    import muvera.index.manifest as mf

    index, docs = _index(tmp_path, "qdrant", 10)
    fr = {"must": [{"key": "lang", "match": {"value": "fr"}}]}
    with index:
        before = index.search([docs[4]], k=10, query_filter=fr).ids.tolist()
        monkeypatch.setattr(mf, "write_manifest", lambda *a: (_ for _ in ()).throw(OSError("full")))
        with pytest.raises(OSError, match="full"):
            index.update_payload(4, {"lang": "fr"})
        monkeypatch.undo()
        assert index.get([4])[0].payload == _payload(4)
        assert index.search([docs[4]], k=10, query_filter=fr).ids.tolist() == before


def test_a_search_uses_its_own_filter_mask_when_another_search_interleaves(tmp_path):
    """The per-filter mask cache is shared by the threads that search one reader (the
    server does): another search may store its mask between this search storing its own
    and using it. Played here deterministically: the cache's setter runs a search with
    another filter right after the first store; both must keep their own filter."""
    index, docs = _index(tmp_path, "exact", 120)
    en = {"must": [{"key": "lang", "match": {"value": "en"}}]}
    fr = {"must": [{"key": "lang", "match": {"value": "fr"}}]}
    interleaved: list = []

    def get(self):
        return self.__dict__.get("_racy_cache", (None, None))

    def put(self, value):
        self.__dict__["_racy_cache"] = value
        if not interleaved:  # once: "another thread" searches with its own filter now
            interleaved.append(self.search([docs[1][:3]], k=5, query_filter=fr,
                                           with_payloads=True))  # fmt: skip

    index.__class__ = type("Racy", (type(index),), {"_filter_cache": property(get, put)})
    mine = index.search([docs[0][:3]], k=5, query_filter=en, with_payloads=True)
    assert interleaved, "the interleaving did not happen"
    assert {p["lang"] for p in mine.payloads[0]} == {"en"}
    assert {p["lang"] for p in interleaved[0].payloads[0]} == {"fr"}
    index.close()
