"""The torch path gives the numpy path's numbers, as tensors on the input's device."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import pad, ragged

from muvera import FDEConfig, FDEEncoder, MuveraError, maxsim

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

CONFIGS = [
    FDEConfig(
        dimension=16, num_repetitions=4, num_simhash_projections=3, fill_empty_partitions=True
    ),
    FDEConfig(
        dimension=16, num_repetitions=3, num_simhash_projections=0, projection_type="identity"
    ),
    FDEConfig(
        dimension=16,
        num_repetitions=2,
        num_simhash_projections=4,
        projection_type="identity",
        fill_empty_partitions=True,
        final_projection_dimension=100,
    ),
    FDEConfig(
        dimension=8,
        num_repetitions=2,
        num_simhash_projections=11,
        projection_dimension=2,
        fill_empty_partitions=True,
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"k{c.num_simhash_projections}")
def test_torch_matches_numpy(config, device):
    enc = FDEEncoder(config, chunk_tokens=20)
    items = ragged(np.random.default_rng(0), [5, 0, 17, 1, 40], config.dimension)
    tensors = [torch.from_numpy(x).to(device) for x in items]
    for method in ("encode_queries", "encode_documents"):
        expect = getattr(enc, method)(items)
        got = getattr(enc, method)(tensors)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        assert got.device.type == device
        np.testing.assert_allclose(got.cpu().numpy(), expect, atol=2e-5)
        padded, lengths = pad(items, config.dimension, fill=3.0)
        got_padded = getattr(enc, method)(
            torch.from_numpy(padded).to(device), lengths=torch.from_numpy(lengths)
        )
        np.testing.assert_allclose(got_padded.cpu().numpy(), expect, atol=2e-5)


def test_torch_input_errors():
    enc = FDEEncoder(FDEConfig(dimension=4, num_repetitions=2, num_simhash_projections=2))
    good = torch.ones((2, 4))
    with pytest.raises(MuveraError, match="item 1 is not a torch tensor"):
        enc.encode_queries([good, np.ones((2, 4), np.float32)])
    with pytest.raises(MuveraError, match="item 1 has NaN"):
        enc.encode_queries([good, torch.full((2, 4), float("nan"))])
    with pytest.raises(MuveraError, match="item 0 has dtype"):
        enc.encode_queries([torch.ones((2, 4), dtype=torch.int64)])
    with pytest.raises(MuveraError, match="out must be"):
        enc.encode_queries([good], out=np.zeros((1, enc.output_dimension), np.float32))


def test_bfloat16_input():
    enc = FDEEncoder(FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2))
    x = torch.randn(5, 8, dtype=torch.bfloat16)
    np.testing.assert_allclose(
        enc.encode_documents([x]).numpy(), enc.encode_documents([x.float().numpy()]), atol=1e-6
    )


@pytest.mark.parametrize("device", DEVICES)
def test_torch_maxsim_matches_numpy(device):
    rng = np.random.default_rng(3)
    q = ragged(rng, [3, 0, 5], 8, unit=False)
    d = ragged(rng, [2, 7, 0, 1], 8, unit=False)
    got = maxsim(
        [torch.from_numpy(x).to(device) for x in q], [torch.from_numpy(x).to(device) for x in d]
    )
    assert isinstance(got, torch.Tensor) and got.device.type == device
    np.testing.assert_allclose(got.cpu().numpy(), maxsim(q, d), atol=1e-5)
