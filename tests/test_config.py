from __future__ import annotations

import dataclasses

import pytest

from muvera import FDEConfig, MuveraError


def test_defaults_are_the_papers_10240_point():
    cfg = FDEConfig(dimension=128)
    assert (cfg.num_repetitions, cfg.num_simhash_projections, cfg.projection_type) == (
        20,
        5,
        "ams_sketch",
    )
    assert cfg.block_dimension == 16 and cfg.output_dimension == 10240
    assert cfg.fill_empty_partitions is False and cfg.final_projection_dimension is None


def test_dimensions():
    assert FDEConfig(dimension=8, projection_type="identity").block_dimension == 8
    assert (
        FDEConfig(dimension=8, projection_type="identity", projection_dimension=8).output_dimension
        == 20 * 32 * 8
    )
    assert (
        FDEConfig(dimension=8, num_simhash_projections=0, num_repetitions=1).output_dimension == 16
    )
    assert FDEConfig(dimension=8, final_projection_dimension=100).output_dimension == 100
    assert FDEConfig(dimension=8, final_projection_dimension=100).raw_dimension == 10240


def test_round_trips():
    cfg = FDEConfig(
        dimension=48,
        num_repetitions=10,
        num_simhash_projections=4,
        projection_dimension=8,
        fill_empty_partitions=True,
        final_projection_dimension=512,
        seed=7,
    )
    assert FDEConfig.from_dict(cfg.to_dict()) == cfg
    assert FDEConfig.from_json(cfg.to_json()) == cfg


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FDEConfig(dimension=8).dimension = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dimension": 0}, "dimension must be >= 1, got 0"),
        ({"dimension": 8.0}, "dimension must be an int"),
        ({"dimension": True}, "dimension must be an int"),
        ({"dimension": 8, "num_repetitions": 0}, "num_repetitions"),
        (
            {"dimension": 8, "num_simhash_projections": -1},
            r"num_simhash_projections must be in \[0, 30\]",
        ),
        ({"dimension": 8, "num_simhash_projections": 31}, r"\[0, 30\]"),
        ({"dimension": 8, "projection_type": "gaussian"}, "projection_type must be one of"),
        ({"dimension": 8, "projection_dimension": 0}, "projection_dimension"),
        ({"dimension": 8, "projection_type": "identity", "projection_dimension": 4}, "identity"),
        ({"dimension": 8, "fill_empty_partitions": 1}, "fill_empty_partitions must be a bool"),
        ({"dimension": 8, "final_projection_dimension": 0}, "final_projection_dimension"),
        ({"dimension": 8, "seed": -1}, "seed"),
        ({"dimension": 8, "seed": 2**32}, "seed"),
        (
            {"dimension": 8, "num_simhash_projections": 30, "num_repetitions": 4},
            "supported maximum",
        ),
    ],
)
def test_invalid_values_name_the_field(kwargs, message):
    with pytest.raises(MuveraError, match=message):
        FDEConfig(**kwargs)


def test_errors_are_value_errors():
    with pytest.raises(ValueError, match="dimension"):
        FDEConfig(dimension=-3)


def test_from_dict_rejects_unknown_and_bad_json():
    with pytest.raises(MuveraError, match="unknown fields"):
        FDEConfig.from_dict({"dimension": 8, "k_sim": 4})
    with pytest.raises(MuveraError, match="invalid JSON"):
        FDEConfig.from_json("{nope")
    with pytest.raises(MuveraError, match="needs a dict"):
        FDEConfig.from_dict([("dimension", 8)])  # type: ignore[arg-type]
