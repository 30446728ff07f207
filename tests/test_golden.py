"""Every configuration computed by Google's compiled C++ reference (../shared/golden)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from muvera import FDEConfig, FDEEncoder, maxsim


def _cases(golden):
    return json.loads(str(golden["meta_json"]))["cases"]


def _split(golden, D, kind):
    points = golden[f"dim{D}_{kind}_points"]
    lengths = golden[f"dim{D}_{kind}_lengths"]
    return np.split(points, np.cumsum(lengths)[:-1])


def _config(case, fill):
    return FDEConfig(
        dimension=case["dimension"],
        num_repetitions=case["num_repetitions"],
        num_simhash_projections=case["num_simhash_projections"],
        projection_type=case["projection_type"],
        projection_dimension=case["projection_dimension"],
        final_projection_dimension=case["final_projection_dimension"],
        seed=case["seed"],
        fill_empty_partitions=fill,
    )


@pytest.mark.parametrize("chunk_tokens", [16384, 5])
def test_all_golden_cases(golden, chunk_tokens, kernel):
    cases = _cases(golden)
    assert len(cases) == 108
    for case in cases:
        D, i = case["dimension"], case["id"]
        queries, documents = _split(golden, D, "query"), _split(golden, D, "document")
        plain = FDEEncoder(_config(case, False), chunk_tokens=chunk_tokens, kernel=kernel)
        filled = FDEEncoder(_config(case, True), chunk_tokens=chunk_tokens, kernel=kernel)
        assert plain.output_dimension == case["output_dimension"]
        for got, key in (
            (plain.encode_queries(queries), f"case{i:03d}_query"),
            (plain.encode_documents(documents), f"case{i:03d}_document"),
            (filled.encode_documents(documents), f"case{i:03d}_document_filled"),
        ):
            assert got.dtype == np.float32
            np.testing.assert_allclose(
                got, golden[key], atol=1e-5, rtol=1e-5, err_msg=f"{key} {case}"
            )


def test_filled_queries_equal_plain_queries(golden):
    """Queries never fill, whatever the config says."""
    case = _cases(golden)[-1]
    queries = _split(golden, case["dimension"], "query")
    a = FDEEncoder(_config(case, True)).encode_queries(queries)
    b = FDEEncoder(_config(case, False)).encode_queries(queries)
    np.testing.assert_array_equal(a, b)


def test_golden_maxsim(golden):
    for D in (8, 128):
        got = maxsim(_split(golden, D, "query"), _split(golden, D, "document"))
        np.testing.assert_allclose(got, golden[f"dim{D}_maxsim"], atol=1e-5)
