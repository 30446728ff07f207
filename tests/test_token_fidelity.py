"""benchmarks/check_token_fidelity.py's own machinery: the rate-distortion rows simulate
Shannon's bound (squared error variance x 2^-2R a value, independent of the
reconstruction), the budget rate is what the index's files leave of 12 KiB a document,
and a whole run on a small residual4lm index reports every quantizer at every candidate
count, float32 finding all of the truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_scale_text  # noqa: E402
import check_token_fidelity as fidelity  # noqa: E402
from scale_corpus import TextLikeCorpus  # noqa: E402

from muvera import FDEConfig, Index  # noqa: E402
from muvera.token_codes import LM_LEVELS, row_bytes  # noqa: E402


@pytest.mark.parametrize("bits", [2.0, 4.0, 4.33])
def test_the_bound_rows_have_shannons_error_independent_of_the_reconstruction(bits):
    rng = np.random.default_rng(3)
    scales = rng.uniform(0.01, 0.2, size=(4000, 1)).astype(np.float32)
    r = (rng.standard_normal((4000, 64)) * scales).astype(np.float32)
    y = fidelity._rd_bound(bits, seed=5)(r)
    err = y - r
    per_token = (err * err).mean(axis=1) / (r * r).mean(axis=1)
    np.testing.assert_allclose(per_token.mean(), 2.0 ** (-2 * bits), rtol=0.02)
    # the test channel: error uncorrelated with what is reconstructed
    corr = (y * err).sum() / np.sqrt((y * y).sum() * (err * err).sum())
    assert abs(corr) < 0.01
    again = fidelity._rd_bound(bits, seed=5)(r)
    np.testing.assert_array_equal(y, again)  # a fixed seed: the same simulated codes


def test_moved_errors_keep_their_size_and_leave_their_token():
    rng = np.random.default_rng(4)
    scales = rng.uniform(0.01, 0.2, size=(500, 1)).astype(np.float32)
    r = (rng.standard_normal((500, 32)) * scales).astype(np.float32)
    code = fidelity.quantizers(32, r)["residual4lm"]
    err = code(r) - r
    moved = fidelity._moved(code, seed=2)(r) - r
    rms = np.sqrt((r * r).mean(axis=1))
    # the same relative errors, token for token a permutation of them
    before = np.sort(np.linalg.norm(err, axis=1) / rms)
    after = np.sort(np.linalg.norm(moved, axis=1) / rms)
    np.testing.assert_allclose(after, before, rtol=1e-4)
    assert not np.allclose(moved, err)  # not left where they were
    np.testing.assert_array_equal(moved, fidelity._moved(code, seed=2)(r) - r)


def test_lloyds_iteration_gives_the_shipped_levels_and_maxs_5_bit_error():
    np.testing.assert_allclose(fidelity._lloyd_max_levels(16), LM_LEVELS, atol=5e-4)
    x = np.random.default_rng(6).standard_normal(400_000).astype(np.float32)
    five = fidelity._lloyd_max_levels(32)
    cuts = (five[1:] + five[:-1]) / 2
    mse = float(((five[np.searchsorted(cuts, x)] - x) ** 2).mean())
    assert mse == pytest.approx(0.002499, rel=0.03)  # Max (1960), 32 levels


def test_the_mixed_code_spends_its_bits_where_it_says():
    rng = np.random.default_rng(8)
    r = (rng.standard_normal((3000, 64)) * rng.uniform(0.01, 0.2, (3000, 1))).astype(np.float32)

    def rel(code):
        return float((((code(r) - r) ** 2).mean(axis=1) / (r * r).mean(axis=1)).mean())

    lm = rel(fidelity.quantizers(64, r)["residual4lm"])
    none = rel(fidelity._mixed_lloyd_max(64, 0, rotate=False))
    some = rel(fidelity._mixed_lloyd_max(64, 16))
    every = rel(fidelity._mixed_lloyd_max(64, 64))
    assert none == pytest.approx(lm, rel=0.01)  # no 5-bit values, no rotation: residual4lm
    assert every < some < none
    # the share of 5-bit values moves the error by its share of the difference
    assert some == pytest.approx(none + (every - none) * 16 / 64, rel=0.05)
    # rows with no energy stay zero; the rotation is undone
    zero = fidelity._mixed_lloyd_max(64, 16)(np.zeros((2, 64), np.float32))
    np.testing.assert_allclose(zero, 0, atol=1e-7)


def small_corpus() -> TextLikeCorpus:
    """Source documents in 16 dimensions drawn around 30 topics: enough tokens across 500
    documents (~40k) for the index to fit its token cells."""
    rng = np.random.default_rng(11)
    lengths = rng.integers(60, 100, size=60).astype(np.int64)
    topics = rng.standard_normal((30, 16))
    tokens = topics[rng.integers(0, 30, int(lengths.sum()))] + 0.5 * rng.standard_normal(
        (int(lengths.sum()), 16)
    )
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    queries = [rng.standard_normal((6, 16)).astype(np.float32) for _ in range(12)]
    return TextLikeCorpus(tokens.astype(np.float16), lengths, queries, noise=0.3)


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    corpus = small_corpus()
    path = tmp_path_factory.mktemp("fidelity") / "ix"
    config = FDEConfig(dimension=16, num_repetitions=2, num_simhash_projections=2, seed=1)
    docs = [d.astype(np.float32) for d in corpus.documents(0, 500)]
    with Index.create(path, config, "exact", token_dtype="residual4lm") as index:
        index.add(list(range(500)), docs)
        assert index.manifest["tokens"].get("residual_from") is not None
    return corpus, path


def test_the_budget_rate_is_what_the_other_files_leave_of_12_kib(small_index):
    _, path = small_index
    tokens = fidelity.json.loads((path / "manifest.json").read_text())["tokens"]
    files = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    n_tokens = tokens["bytes"] // row_bytes("residual4lm", 16)
    want = (12 * 1024 * 500 - (files - tokens["bytes"])) * 8 / (n_tokens * 16)
    assert fidelity.budget_bits(path, 500, 16) == pytest.approx(want)


def test_a_run_reports_every_quantizer_at_every_count(small_index, tmp_path, monkeypatch):
    corpus, path = small_index
    monkeypatch.setattr(TextLikeCorpus, "from_cache", classmethod(lambda cls: corpus))
    monkeypatch.setattr(bench_scale_text, "CACHE", tmp_path)  # the truth's cache
    monkeypatch.setattr(fidelity, "FIT_DOCS", 100)
    args = argparse.Namespace(index=path, queries=12, candidates="20,40")
    result = fidelity.measure(args)
    rows = {row["quantizer"]: row for row in result["rows"]}
    assert result["candidate_counts"] == [20, 40]
    assert rows["float32"]["found"] == 1.0  # the truth is ranked, exactly
    assert rows["float32"]["mse_per_token"] < 1e-12  # centroid + residual: rounding alone
    for row in rows.values():
        assert set(row["found_by_candidates"]) == {"20", "40"}
        assert row["found_candidates"] == row["found_by_candidates"]["20"]
        assert row["found_by_candidates"]["20"] <= 1.0
    # more candidates, float32 scoring: the top-10 among them can only hold more truth
    assert (
        rows["float32"]["found_by_candidates"]["40"] >= rows["float32"]["found_by_candidates"]["20"]
    )
    budget = f"rate-distortion bound, {result['budget_bits']:.2f} (12 KiB/doc budget) bits a value"
    assert budget in rows
    bound4 = rows["rate-distortion bound, 4 bits a value"]["mse_per_token"]
    bound5 = rows["rate-distortion bound, 5 bits a value"]["mse_per_token"]
    assert bound5 < bound4 < rows["residual4lm"]["mse_per_token"]  # no 4-bit code beats D(R)
    n_wide = max(0, (int(result["budget_bits"] * 16 / 8) - 1) * 8 - 64)
    mixed = rows[f"Lloyd-Max, 5 bits on {min(n_wide, 16)} of 16 values (12 KiB/doc budget)"]
    five = rows["Lloyd-Max, 5 bits a value (over the budget)"]["mse_per_token"]
    assert five <= mixed["mse_per_token"] < rows["residual4lm"]["mse_per_token"]
    moved = rows["residual4lm errors moved between tokens"]["mse_per_token"]
    assert moved == pytest.approx(rows["residual4lm"]["mse_per_token"], rel=0.1)
    table = fidelity.markdown(result)
    assert "the index's top 20 alone | the index's top 40 alone" in table
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == len(rows) + 2
    # a results file of the single-count format still renders
    old = {**result, "rows": [{k: v for k, v in r.items() if k != "found_by_candidates"}
                              for r in result["rows"]]}  # fmt: skip
    del old["candidate_counts"]
    assert "the same, the index's candidates alone" in fidelity.markdown(old)


def test_the_residual_shape_check_tells_gaussian_from_skewed_variances():
    import check_residual_shape

    x = np.random.default_rng(0).standard_normal((20000, 128)).astype(np.float32)
    x[:3] = 0
    s = check_residual_shape.shape(x)
    assert s["zero_rows"] == 3 and s["tokens"] == 20000
    assert s["kurtosis"] == pytest.approx(3.0, abs=0.1) and s["coding_gain_db"] < 0.05
    x[:, :64] *= 2  # variances 4 and 1: 10 log10(2.5 / 2) dB to gain by a transform code
    assert check_residual_shape.shape(x)["coding_gain_db"] == pytest.approx(0.97, abs=0.03)
