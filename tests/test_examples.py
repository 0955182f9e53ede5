"""Every example study validates, resolves its trace, profile and policy, and runs (briefly)."""

from __future__ import annotations

from pathlib import Path

import pytest

from offramp.analysis.config import load_config
from offramp.analysis.study import run_study

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path):
    cfg = load_config(path)
    short = {"replications": 1, "warmup_fraction": 0.0}
    short.update({"requests": 500, "duration_s": None} if cfg.run.requests else {"duration_s": 0.5})
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update=short)})
    out = run_study(cfg, path.parent)
    assert out.result.runs[0]["requests"] > 0
    assert 0 < out.result.summary["accuracy"]["mean"] <= 1
