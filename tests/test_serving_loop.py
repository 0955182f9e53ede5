"""The real serving loop runs exactly the execution rule's stages and takes the policy's exits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from offramp.core.execution import batch_plan
from offramp.profiling.serving_loop import ServingLoop
from offramp.traces.models import FmnistResNet


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = FmnistResNet(widths=(8, 16, 16, 16), strides=(1, 2, 1, 2)).eval()
    assert len(m.segments) == 4
    return m


def confidences(model, x) -> np.ndarray:
    """(N, K) max softmax of every exit, computed directly from the model."""
    out, act = [], x
    with torch.inference_mode():
        for seg, head in zip(model.segments, model.heads, strict=True):
            act = seg(act)
            out.append(torch.softmax(head(act), dim=-1).amax(dim=-1).numpy())
    return np.stack(out, axis=1)


@pytest.mark.parametrize("mode", ["shrink", "keep", "none"])
@pytest.mark.parametrize("active", [(True, True, True, True), (True, False, True, True)])
def test_loop_takes_the_thresholds_exits_and_runs_the_rules_stages(model, mode, active):
    torch.manual_seed(1)
    x = model.example_input(12)
    conf = confidences(model, x)
    k = conf.shape[1]
    # Thresholds at each exit's median confidence: about half of those reaching it leave.
    thr = [float(np.median(conf[:, j])) for j in range(k - 1)]
    loop = ServingLoop(model, "cpu", torch.float32, mode, thr, active)
    run = loop.run([x[i:i + 1] for i in range(12)])
    # What a max-prob policy with these thresholds decides.
    want = []
    for row in conf:
        hits = [j for j in range(k - 1) if active[j] and mode != "none" and row[j] >= thr[j]]
        want.append(hits[0] if hits else k - 1)
    assert run.exits == want
    going = tuple(sum(1 for e in want if e > j) for j in range(k - 1))
    plan = batch_plan(mode, 12, going, active)
    assert [st for st, _ in run.stages] == list(plan.stages)
    assert all(ms >= 0 for _, ms in run.stages)


def test_profile_rows_for_the_loops_stages(model):
    from offramp.profiling.format import validate_profile
    from offramp.profiling.measure import RunPolicy
    from offramp.profiling.profile_model import profile_model

    prof = profile_model(model, "eager", "cpu", "fp32", model.example_input, [1, 3],
                         RunPolicy(runs=3, warmup=1, warmup_s=0.01), "test")
    validate_profile(prof)
    kinds = {(r["kind"], r["k"]) for r in prof.rows}
    assert {("check", k) for k in range(3)} <= kinds and ("check", 3) not in kinds
    assert {("handoff", k) for k in range(3)} <= kinds and ("overhead", 0) in kinds
    assert set(prof.meta["in_loop_residual_ms"]) == {f"{kind} {k}" for kind in ("segment", "head")
                                                     for k in range(4)}
    assert "inside the serving loop" in prof.meta["loop_stages"]
