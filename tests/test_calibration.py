"""Calibration (issue 12): the centred FDE, its fit, its place in the index and its format."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from helpers import format_version, store_args

from muvera import FDEConfig, FDEEncoder, Index, MuveraError
from muvera.batch import TokenBatch
from muvera.fde.calibration import CalibratedEncoder, Calibration, anisotropy
from muvera.synthetic import planted_corpus


def _shifted(rng, n, d, shift=3.0):
    u = np.zeros(d, np.float32)
    u[0] = 1.0
    x = rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d) + shift * u
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- fit ----------------------------------------------------------------------------------
def test_fit_and_round_trip_exact():
    rng = np.random.default_rng(0)
    cal = Calibration.fit(_shifted(rng, 5000, 16))
    assert cal.anisotropy > 0.9 and cal.tokens == 5000
    text = json.dumps(cal.to_dict())
    assert Calibration.from_dict(json.loads(text), 16) == cal


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (np.ones((10, 4)), "at least 1000"),
        (np.ones((2000, 4)), "is the same"),
        (np.vstack([np.eye(4)] * 500 + [[[np.nan] * 4]]), "NaN"),
        (np.ones(2000), "(n, d)"),
    ],
)
def test_fit_refuses_bad_samples(tokens, message):
    with pytest.raises(MuveraError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Calibration.fit(tokens)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 9}, "version 9"),
        ({"kind": "whiten"}, "malformed"),
        ({"mean": [0.1] * 3}, "3 dimensions"),
        ({"mean": "x"}, "malformed"),
        ({"tokens": True}, "malformed"),
        ({"mean": [1e300] * 16}, "infinite"),
    ],
)
def test_from_dict_refuses_bad_sections(change, message):
    good = Calibration.fit(_shifted(np.random.default_rng(1), 2000, 16)).to_dict()
    with pytest.raises(MuveraError, match=message):
        Calibration.from_dict({**good, **change}, 16)


def test_anisotropy_range():
    rng = np.random.default_rng(2)
    assert anisotropy(rng.standard_normal((4000, 32))) < 0.05
    assert anisotropy(_shifted(rng, 4000, 32)) > 0.9


# -- the calibrated FDE -------------------------------------------------------------------
def test_calibrated_fde_layout_matches_its_definition():
    """Sketched part = the narrower reference FDE of the centred tokens; last coordinate of
    each block = token count (queries) / mean of <mu, d - mu> (documents), in the same
    partitions the reference assigns."""
    rng = np.random.default_rng(3)
    cfg = FDEConfig(dimension=12, num_repetitions=3, num_simhash_projections=2)
    enc = CalibratedEncoder(cfg, Calibration.fit(_shifted(rng, 3000, 12)))
    items = [_shifted(rng, n, 12) for n in (5, 1, 9)]
    batch = TokenBatch.from_items(items)
    mu = enc.mean
    R, B, p = 3, 4, cfg.block_dimension
    for document in (False, True):
        out = (enc.encode_documents if document else enc.encode_queries)(batch)
        assert out.shape == (3, cfg.output_dimension)
        blocks = out.reshape(3, R * B, p)
        centred = [x - mu for x in items]
        inner = (enc.inner.encode_documents if document else enc.inner.encode_queries)(centred)
        np.testing.assert_allclose(blocks[:, :, :-1].reshape(3, -1), inner, rtol=1e-5, atol=1e-6)
        # the partition of each token: recover it from the inner FDE of one-token items
        for i, x in enumerate(centred):
            per_token = np.zeros((R * B,))
            counts = np.zeros((R * B,))
            for t in x:
                one = enc.inner.encode_queries([t[None]]).reshape(R * B, p - 1)
                hit = np.abs(one).sum(axis=1) > 0
                assert hit.sum() == R  # one partition per repetition
                per_token[hit] += float(t @ mu) if document else 1.0
                counts[hit] += 1
            if document:
                per_token /= np.maximum(counts, 1)
            np.testing.assert_allclose(blocks[i, :, -1], per_token, rtol=1e-5, atol=1e-6)


def test_calibrated_scores_track_maxsim_minus_a_constant():
    """With one partition and the identity-sized sketch error averaged out over many
    repetitions, query . document ~ sum_i <q_i, mean(d) - mu>: the exact term carries
    <mu, d - mu> without sketch noise (checked on the exact coordinates alone)."""
    rng = np.random.default_rng(4)
    cfg = FDEConfig(dimension=8, num_repetitions=1, num_simhash_projections=0)
    enc = CalibratedEncoder(cfg, Calibration.fit(_shifted(rng, 2000, 8)))
    q, d = _shifted(rng, 4, 8), _shifted(rng, 6, 8)
    qf = enc.encode_queries(TokenBatch.from_items([q])).reshape(-1)
    df = enc.encode_documents(TokenBatch.from_items([d])).reshape(-1)
    expected = len(q) * float((d - enc.mean).mean(axis=0) @ enc.mean)
    assert qf[-1] * df[-1] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "cfg",
    [
        FDEConfig(dimension=8, projection_type="identity"),
        FDEConfig(dimension=8, projection_dimension=1),
        FDEConfig(dimension=8, final_projection_dimension=64),
        FDEConfig(dimension=8, fill_empty_partitions=True),
    ],
)
def test_configs_that_cannot_be_calibrated(tmp_path, cfg):
    cal = Calibration.fit(_shifted(np.random.default_rng(5), 2000, 8))
    with pytest.raises(MuveraError, match="cannot be calibrated"):
        CalibratedEncoder(cfg, cal)
    with pytest.raises(MuveraError, match="cannot be calibrated"):
        Index.create(tmp_path / "a", cfg, store="exact", calibration="centre")
    with Index.create(tmp_path / "b", cfg, store="exact") as index:
        assert index.calibration["kind"] == "none"
        assert "not applicable" in index.calibration["reason"]


# -- the index ----------------------------------------------------------------------------
def _planted(common: float):
    return planted_corpus(400, 60, 32, common=common, seed=3, vocabulary=1024, noise=1.2)


def _planted_found(index, queries, targets) -> float:
    ids = index.search(queries, k=10, rerank=False).ids
    return float(np.mean([targets[i] in ids[i] for i in range(len(queries))]))


@pytest.mark.parametrize("store", ["exact", "hnswlib", "qdrant"])
def test_auto_calibration_rescues_an_anisotropic_space(tmp_path, store, caplog):
    """A shared component (mean token norm 0.95) collapses the reference FDE: the planted
    document is in the FDE top-10 for 8% of queries uncalibrated; auto calibration turns
    itself on, says so, and brings it back near the isotropic corpus' 87%."""
    kind, options = store_args(store, tmp_path)
    docs, queries, targets = _planted(3.0)
    found = {}
    for mode in ("off", "auto"):
        with caplog.at_level(logging.INFO, logger="muvera"):
            index = Index.create(
                tmp_path / mode, FDEConfig(dimension=32), store=kind, store_options=options,
                calibration=mode,
            )  # fmt: skip
            with index:
                assert index.calibration["kind"] == ("none" if mode == "off" else "pending")
                index.add(list(range(len(docs))), docs)
                found[mode] = _planted_found(index, queries, targets)
    assert "calibration on" in caplog.text
    assert found["off"] < 0.3 and found["auto"] > 0.6, found
    if kind != "qdrant":  # (in-memory qdrant does not outlive its client)
        with Index.open(tmp_path / "auto", mode="r") as index:
            assert index.calibration["kind"] == "centre"
            assert index.calibration["anisotropy"] > 0.9
            assert index.manifest["format_version"] == format_version(index.manifest, 3)
            assert _planted_found(index, queries, targets) == found["auto"]


def test_auto_calibration_stays_off_on_an_isotropic_space(tmp_path):
    docs, queries, _ = _planted(0.0)
    with Index.create(tmp_path / "ix", FDEConfig(dimension=32), store="exact") as index:
        index.add(list(range(len(docs))), docs)
        assert index.calibration["kind"] == "none"
        assert index.calibration["anisotropy"] < 0.1
        assert index.manifest["format_version"] == 1  # readable by older versions
        plain = FDEEncoder(FDEConfig(dimension=32))
        ids = index.search(queries, k=5, rerank=False).ids
    ref = np.argsort(-(plain.encode_queries(queries) @ plain.encode_documents(docs).T), axis=1)
    assert (ids[:, 0] == ref[:, 0]).all()  # the reference FDE, unchanged


def test_first_add_decides_and_later_adds_follow(tmp_path):
    rng = np.random.default_rng(6)
    small = [_shifted(rng, 5, 16) for _ in range(3)]  # 15 tokens: too few to fit
    with Index.create(tmp_path / "ix", FDEConfig(dimension=16), store="exact") as index:
        index.add([0, 1, 2], small)
        assert index.calibration["kind"] == "none"
        assert "15 token vectors" in index.calibration["reason"]
        index.add(list(range(3, 303)), [_shifted(rng, 10, 16) for _ in range(300)])
        assert index.calibration["kind"] == "none"


def test_explicit_centre_refuses_too_few_tokens_and_writes_nothing(tmp_path):
    rng = np.random.default_rng(7)
    with Index.create(
        tmp_path / "ix", FDEConfig(dimension=16), store="exact", calibration="centre"
    ) as index:
        with pytest.raises(MuveraError, match="at least 1000"):
            index.add([0], [_shifted(rng, 5, 16)])
        assert len(index) == 0 and index.calibration["kind"] == "pending"
        index.add(list(range(200)), [_shifted(rng, 10, 16) for _ in range(200)])
        assert index.calibration["kind"] == "centre"
        assert index.calibration["fitted"] == "centre"


def test_identical_tokens_keep_the_reference_fde(tmp_path):
    docs = [np.ones((10, 8), np.float32) for _ in range(200)]
    with Index.create(tmp_path / "ix", FDEConfig(dimension=8), store="exact") as index:
        index.add(list(range(200)), docs)
        assert index.calibration["kind"] == "none"
        assert "is the same" in index.calibration["reason"]
        assert index.search([docs[0]], k=3).ids.shape == (1, 3)


def test_given_calibration_is_used_from_the_start(tmp_path):
    rng = np.random.default_rng(8)
    cal = Calibration.fit(_shifted(rng, 3000, 16))
    with Index.create(tmp_path / "ix", FDEConfig(dimension=16), store="exact",
                      calibration=cal) as index:  # fmt: skip
        assert index.calibration["kind"] == "centre" and index.calibration["fitted"] == "given"
        assert isinstance(index.encoder, CalibratedEncoder)
        index.add([0], [_shifted(rng, 3, 16)])
    with pytest.raises(MuveraError, match="fitted on 16-d tokens"):
        Index.create(tmp_path / "bad", FDEConfig(dimension=8), store="exact", calibration=cal)
    with pytest.raises(MuveraError, match="calibration must be"):
        Index.create(tmp_path / "bad", FDEConfig(dimension=8), store="exact", calibration="on")


def _calibrated(tmp_path):
    rng = np.random.default_rng(9)
    path = tmp_path / "ix"
    with Index.create(path, FDEConfig(dimension=16), store="exact", calibration="centre") as ix:
        ix.add(list(range(200)), [_shifted(rng, 10, 16) for _ in range(200)])
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: {**c, "mean": c["mean"][:-1]}, "15 dimensions"),
        (lambda c: {**c, "version": 2}, "upgrade muvera"),
        (lambda c: {**c, "fde": {**c["fde"], "seed": 7}}, "another FDE config"),
        (lambda c: "centre", "malformed"),
        (lambda c: {"kind": "pending", "mode": "x"}, "malformed"),
    ],
)
def test_tampered_calibration_sections_are_refused(tmp_path, change, message):
    path = _calibrated(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["calibration"] = change(manifest["calibration"])
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MuveraError, match=message):
        Index.open(path, mode="r")


def test_a_calibrated_index_refuses_an_encoder_file_from_elsewhere(tmp_path):
    path = _calibrated(tmp_path)
    FDEEncoder(FDEConfig(dimension=16, seed=7)).save(path / "encoder.npz")
    with pytest.raises(MuveraError, match="another FDE config"):
        Index.open(path, mode="r")
