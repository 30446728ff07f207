"""FDEEncoder: vectorised kernels vs the literal reference, batch forms, bad input, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import pad, ragged
from reference import reference_fde

from muvera import FDEConfig, FDEEncoder, MuveraError

CONFIGS = [
    FDEConfig(
        dimension=6, num_repetitions=3, num_simhash_projections=0, projection_type="identity"
    ),
    FDEConfig(
        dimension=6,
        num_repetitions=2,
        num_simhash_projections=3,
        projection_type="identity",
        fill_empty_partitions=True,
    ),
    FDEConfig(
        dimension=10,
        num_repetitions=4,
        num_simhash_projections=4,
        projection_dimension=3,
        fill_empty_partitions=True,
        seed=123,
    ),
    FDEConfig(
        dimension=10,
        num_repetitions=2,
        num_simhash_projections=2,
        projection_dimension=7,
        final_projection_dimension=50,
        fill_empty_partitions=True,
        seed=2**32 - 1,
    ),
    FDEConfig(
        dimension=5,
        num_repetitions=1,
        num_simhash_projections=9,
        projection_dimension=2,
        fill_empty_partitions=True,
        seed=9,
    ),  # 512 partitions: fill by code table
    FDEConfig(
        dimension=5,
        num_repetitions=2,
        num_simhash_projections=11,
        projection_dimension=1,
        fill_empty_partitions=True,
        seed=5,
    ),  # 2048 partitions: fill by token scan
]


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"k{c.num_simhash_projections}-{c.projection_type}"
)
def test_kernels_match_literal_reference(config, kernel):
    rng = np.random.default_rng(config.seed % 1000)
    items = ragged(rng, [0, 1, 2, 3, 9, 40], config.dimension)
    enc = FDEEncoder(config, chunk_tokens=16, kernel=kernel)
    queries, documents = enc.encode_queries(items), enc.encode_documents(items)
    for i, item in enumerate(items):
        np.testing.assert_allclose(
            queries[i], reference_fde(item, config, document=False), atol=2e-5
        )
        np.testing.assert_allclose(
            documents[i], reference_fde(item, config, document=True), atol=2e-5
        )


def test_fill_ties_go_to_the_lowest_token_index(kernel):
    # Two identical tokens have identical sign bits, so every empty partition is a tie
    # between them; a third token differs only in magnitude (same partition too).
    config = FDEConfig(
        dimension=4,
        num_repetitions=3,
        num_simhash_projections=3,
        projection_type="identity",
        fill_empty_partitions=True,
    )
    x = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [2, 4, 6, 8]], dtype=np.float32)
    x[1] += 1e-3  # distinguishable values, same signs
    got = FDEEncoder(config, kernel=kernel).encode_documents([x])[0]
    np.testing.assert_allclose(got, reference_fde(x, config, document=True), atol=1e-6)


def test_empty_items_give_zero_rows_and_keep_positions(kernel):
    enc = FDEEncoder(
        FDEConfig(
            dimension=4, num_repetitions=2, num_simhash_projections=2, fill_empty_partitions=True
        ),
        kernel=kernel,
    )
    rng = np.random.default_rng(0)
    items = [np.zeros((0, 4), np.float32), *ragged(rng, [3], 4), np.zeros((0, 4), np.float32)]
    for out in (enc.encode_queries(items), enc.encode_documents(items)):
        assert out.shape == (3, enc.output_dimension)
        assert not out[0].any() and not out[2].any() and out[1].any()
        assert np.isfinite(out).all()


def test_empty_batch():
    enc = FDEEncoder(FDEConfig(dimension=4))
    assert enc.encode_queries([]).shape == (0, 10240)
    assert enc.encode_documents(np.zeros((0, 5, 4), np.float32)).shape == (0, 10240)


@pytest.mark.parametrize("chunk_tokens", [1, 7, 100000])
def test_batch_equals_one_at_a_time(chunk_tokens, kernel):
    config = FDEConfig(
        dimension=12, num_repetitions=5, num_simhash_projections=3, fill_empty_partitions=True
    )
    enc = FDEEncoder(config, chunk_tokens=chunk_tokens, kernel=kernel)
    items = ragged(np.random.default_rng(1), [5, 0, 17, 1, 33, 2], 12)
    batch_q, batch_d = enc.encode_queries(items), enc.encode_documents(items)
    for i, item in enumerate(items):
        np.testing.assert_allclose(batch_q[i], enc.encode_queries([item])[0], atol=1e-6)
        np.testing.assert_allclose(batch_d[i], enc.encode_documents([item])[0], atol=1e-6)


def test_padded_equals_ragged_and_padding_never_leaks(kernel):
    config = FDEConfig(
        dimension=8, num_repetitions=4, num_simhash_projections=3, fill_empty_partitions=True
    )
    enc = FDEEncoder(config, kernel=kernel)
    items = ragged(np.random.default_rng(2), [4, 0, 9, 1], 8)
    expect_q, expect_d = enc.encode_queries(items), enc.encode_documents(items)
    # Garbage in the padding (large values; zero padding would hash to partition 0).
    padded, lengths = pad(items, 8, T=12, fill=7.5)
    np.testing.assert_allclose(enc.encode_queries(padded, lengths=lengths), expect_q, atol=1e-6)
    np.testing.assert_allclose(enc.encode_documents(padded, lengths=lengths), expect_d, atol=1e-6)
    mask = np.arange(12)[None, :] < lengths[:, None]
    np.testing.assert_allclose(enc.encode_documents(padded, mask=mask), expect_d, atol=1e-6)
    np.testing.assert_allclose(
        enc.encode_documents(padded, mask=mask.astype(np.int8)), expect_d, atol=1e-6
    )
    zero_padded, _ = pad(items, 8, T=12, fill=0.0)
    unmasked = enc.encode_documents(zero_padded)  # every position counts as a token
    assert not np.allclose(unmasked, expect_d)


def test_mask_with_holes_selects_those_tokens():
    config = FDEConfig(dimension=8, num_repetitions=3, num_simhash_projections=2)
    enc = FDEEncoder(config)
    x = ragged(np.random.default_rng(3), [6], 8)[0]
    mask = np.array([[True, False, True, True, False, True]])
    got = enc.encode_documents(x[None], mask=mask)
    np.testing.assert_allclose(got, enc.encode_documents([x[mask[0]]]), atol=1e-6)


def test_float64_and_float16_inputs_are_computed_in_float32():
    enc = FDEEncoder(FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2))
    x = ragged(np.random.default_rng(4), [5], 8)[0]
    base = enc.encode_documents([x])
    np.testing.assert_allclose(enc.encode_documents([x.astype(np.float64)]), base, atol=1e-6)
    half = x.astype(np.float16)
    np.testing.assert_allclose(
        enc.encode_documents([half]), enc.encode_documents([half.astype(np.float32)])
    )
    assert enc.encode_documents([x.tolist()]).shape == base.shape  # nested lists are array-like


def test_out_parameter_and_memmap(tmp_path):
    enc = FDEEncoder(
        FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2), chunk_tokens=3
    )
    items = ragged(np.random.default_rng(5), [3, 4, 5], 8)
    out = np.lib.format.open_memmap(
        tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=(3, enc.output_dimension)
    )
    assert enc.encode_documents(items, out=out) is out
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), enc.encode_documents(items))
    with pytest.raises(MuveraError, match="out must be"):
        enc.encode_documents(items, out=np.zeros((2, enc.output_dimension), np.float32))


@pytest.mark.parametrize(
    ("batch", "kwargs", "message"),
    [
        (
            [np.ones((2, 8), np.float32), np.ones((2, 7), np.float32)],
            {},
            "item 1 has token dimension 7, expected 8",
        ),
        ([np.ones((2, 8), np.float32), np.ones((2, 8), np.int64)], {}, "item 1 has dtype int64"),
        ([np.ones((2, 8), np.float32), np.ones(8, np.float32)], {}, "item 1 must be 2-D"),
        ([np.ones((2, 8), np.float32), np.full((2, 8), np.nan, np.float32)], {}, "item 1 has NaN"),
        (
            [np.ones((1, 8), np.float32)] * 3 + [np.array([[np.inf] + [0.0] * 7], np.float32)],
            {},
            "item 3 has NaN or infinite",
        ),
        (np.ones((3, 8), np.float32), {}, "one 2-D array"),
        (np.ones((2, 3, 8), np.float32), {"lengths": [1, 4]}, "item 1 has length 4, outside"),
        (np.ones((2, 3, 8), np.float32), {"lengths": [1, -1]}, "item 1 has length -1"),
        (np.ones((2, 3, 8), np.float32), {"lengths": [1.0, 2.0]}, "lengths must be integers"),
        (np.ones((2, 3, 8), np.float32), {"lengths": [1, 2, 3]}, "lengths has shape"),
        (np.ones((2, 3, 8), np.float32), {"mask": np.ones((2, 2), bool)}, "mask has shape"),
        (np.ones((2, 3, 8), np.float32), {"mask": np.full((2, 3), 2)}, "mask must be boolean"),
        (
            np.ones((2, 3, 8), np.float32),
            {"lengths": [1, 2], "mask": np.ones((2, 3), bool)},
            "not both",
        ),
        (np.ones((2, 3, 8), np.int32), {}, "not a float dtype"),
        (np.ones((2, 3, 5), np.float32), {}, "token dimension is 5"),
        ([np.ones((2, 8), np.float32)], {"lengths": [2]}, "apply only to a padded"),
        ("some text", {}, "expected a list"),
        (42, {}, "expected a list"),
    ],
)
def test_bad_input_gets_a_clear_error(batch, kwargs, message):
    enc = FDEEncoder(FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2))
    with pytest.raises(MuveraError, match=message):
        enc.encode_documents(batch, **kwargs)


def test_nan_in_padding_is_ignored():
    enc = FDEEncoder(FDEConfig(dimension=4, num_repetitions=2, num_simhash_projections=2))
    padded = np.full((2, 3, 4), np.nan, np.float32)
    padded[0, :2] = 1.0
    padded[1, :1] = -1.0
    assert np.isfinite(enc.encode_documents(padded, lengths=[2, 1])).all()


def test_encoder_rejects_non_config():
    with pytest.raises(MuveraError, match="needs an FDEConfig"):
        FDEEncoder({"dimension": 8})  # type: ignore[arg-type]
    with pytest.raises(MuveraError, match="chunk_tokens"):
        FDEEncoder(FDEConfig(dimension=8), chunk_tokens=0)


@pytest.mark.parametrize("config", CONFIGS[1:4], ids=lambda c: f"k{c.num_simhash_projections}")
def test_save_load_round_trip_is_bit_exact(tmp_path, config):
    enc = FDEEncoder(config)
    items = ragged(np.random.default_rng(6), [3, 10], config.dimension)
    enc.save(tmp_path / "enc.npz")
    loaded = FDEEncoder.load(tmp_path / "enc.npz")
    assert loaded.config == config
    np.testing.assert_array_equal(loaded.encode_documents(items), enc.encode_documents(items))
    np.testing.assert_array_equal(loaded.encode_queries(items), enc.encode_queries(items))


def test_load_uses_stored_matrices_not_the_rng(tmp_path, monkeypatch):
    enc = FDEEncoder(FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2))
    enc.save(tmp_path / "enc.npz")
    import muvera.fde.encoder

    def broken(_config):
        raise AssertionError("load must not redraw matrices")

    monkeypatch.setattr(muvera.fde.encoder, "draw_matrices", broken)
    items = ragged(np.random.default_rng(7), [4], 8)
    np.testing.assert_array_equal(
        FDEEncoder.load(tmp_path / "enc.npz").encode_queries(items), enc.encode_queries(items)
    )


def test_save_is_atomic_and_overwrites(tmp_path, monkeypatch):
    path = tmp_path / "enc.npz"
    first = FDEEncoder(FDEConfig(dimension=8, seed=1))
    first.save(path)
    second = FDEEncoder(FDEConfig(dimension=8, seed=2))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        second.save(path)
    monkeypatch.undo()
    assert FDEEncoder.load(path).config.seed == 1
    assert [p.name for p in tmp_path.iterdir()] == ["enc.npz"]  # no temp file left behind
    second.save(path)
    assert FDEEncoder.load(path).config.seed == 2


def test_load_errors(tmp_path):
    with pytest.raises(MuveraError, match="no file"):
        FDEEncoder.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(MuveraError, match="not a saved FDEEncoder"):
        FDEEncoder.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(MuveraError, match="not a saved FDEEncoder"):
        FDEEncoder.load(tmp_path / "other.npz")
    enc = FDEEncoder(FDEConfig(dimension=8))
    enc.save(tmp_path / "enc.npz")
    with np.load(tmp_path / "enc.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta_json"]))
    meta["format_version"] = 99
    np.savez(tmp_path / "newer.npz", **{**arrays, "meta_json": np.array(json.dumps(meta))})
    with pytest.raises(MuveraError, match=r"format version 99.*upgrade muvera"):
        FDEEncoder.load(tmp_path / "newer.npz")
    np.savez(tmp_path / "damaged.npz", **{**arrays, "simhash": arrays["simhash"][:, :3]})
    with pytest.raises(MuveraError, match="damaged"):
        FDEEncoder.load(tmp_path / "damaged.npz")
