"""The FDE demo runs and its two-stage search recovers what exact MaxSim finds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "examples" / "fde_demo.py"


def test_demo_two_stage_search_tracks_exact_maxsim(capsys):
    spec = importlib.util.spec_from_file_location("fde_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.run(n_docs=400, n_queries=30, dim=32, candidates=50)
    assert result["exact_maxsim_hit@1"] >= 0.9
    assert result["fde_rerank_hit@1"] >= 0.8 * result["exact_maxsim_hit@1"]
    assert result["fde_rerank_hit@1"] >= result["fde_only_hit@1"]
    assert "FDE top-50 + MaxSim" in capsys.readouterr().out
