"""Against a real Qdrant server or cluster: runs only when QDRANT_URL is set.

    QDRANT_URL=http://localhost:6333 pytest tests/test_qdrant_live.py
(see integrations/qdrant/ for docker compose files of one node and of a 3-node cluster).
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
from helpers import ragged

from muvera import FDEConfig, Index, maxsim

URL = os.environ.get("QDRANT_URL")
pytestmark = pytest.mark.skipif(not URL, reason="QDRANT_URL is not set (no live Qdrant server)")
D = 32


@pytest.fixture
def collection():
    qdrant_client = pytest.importorskip("qdrant_client")
    name = f"muvera-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = qdrant_client.QdrantClient(url=URL, api_key=os.environ.get("QDRANT_API_KEY"))
    if client.collection_exists(name):
        client.delete_collection(name)


def test_live_server_two_stage_search(tmp_path, collection):
    rng = np.random.default_rng(0)
    docs = ragged(rng, rng.integers(5, 40, 500), D)
    options = {"url": URL, "collection": collection}
    if os.environ.get("QDRANT_CLUSTER"):
        options.update(shard_number=3, replication_factor=2)
    with Index.create(
        tmp_path / "ix", FDEConfig(dimension=D), store="qdrant", store_options=options
    ) as index:
        index.add(list(range(500)), docs, payloads=[{"n": i} for i in range(500)])
        queries = [d[:5] for d in docs[:20]]
        result = index.search(queries, k=10, candidates=500)
        exact = maxsim(queries, docs)
        for i in range(20):
            assert result.ids[i, 0] == int(np.argmax(exact[i]))
    with Index.open(tmp_path / "ix") as index:  # reconnects from the manifest
        assert len(index.store) == 500
        index.delete([0])
        assert len(index.store) == 499
