"""The real serving loop in ``rebatch`` mode: every request served once with the policy's exit,
survivors of several batches gathered into one, and a batch alone runs as in ``shrink``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from offramp.core.execution import batch_plan
from offramp.core.modes import StageKind
from offramp.profiling.real_runs import serve_stream
from offramp.profiling.serving_loop import ServingLoop
from offramp.traces.models import FmnistResNet

N = 24


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = FmnistResNet(widths=(8, 16, 16, 16), strides=(1, 2, 1, 2)).eval()
    x = model.example_input(N)
    conf, act = [], x
    with torch.inference_mode():
        for seg, head in zip(model.segments, model.heads, strict=True):
            act = seg(act)
            conf.append(torch.softmax(head(act), dim=-1).amax(dim=-1).numpy())
    conf = np.stack(conf, axis=1)
    thr = [float(np.median(conf[:, j])) for j in range(conf.shape[1] - 1)]
    want = [next((j for j in range(len(thr)) if row[j] >= thr[j]), len(thr)) for row in conf]
    return model, x, thr, want


def serve(setup, arrivals, discipline="deepest_first", stage_wait_ms=None, max_batch=4,
          max_wait_ms=0.0):
    model, x, thr, _ = setup
    loop = ServingLoop(model, "cpu", torch.float32, "rebatch", thr, discipline=discipline,
                       stage_wait_ms=stage_wait_ms)
    return serve_stream(loop, lambda s: x[s:s + 1], np.asarray(arrivals, dtype=float),
                        np.arange(N), max_batch, max_wait_ms, lead_in_s=0.01)


@pytest.mark.parametrize("discipline", ["deepest_first", "oldest_first", "fullest_first"])
def test_every_request_once_with_its_exit_and_survivors_rebatched(setup, discipline):
    run = serve(setup, np.zeros(N), discipline, stage_wait_ms=50.0)
    assert run["exit"].tolist() == setup[3]
    assert np.all(run["arrival"] <= run["dispatch"]) and np.all(run["dispatch"] < run["finish"])
    # stage batches one after another on the one replica
    assert np.all(run["batch_dispatch"][1:] >= run["batch_finish"][:-1])
    # each request in one stage-0 batch, and in one batch of every later stage it reached
    stage = run["batch_stage"]
    first = run["batch"]
    assert np.all(stage[first] == 0)
    seg = run["stage_kind"] == StageKind.SEGMENT.code
    ran = np.bincount(run["stage_k"][seg], weights=run["stage_size"][seg], minlength=4)
    reached = [(np.asarray(setup[3]) >= k).sum() for k in range(4)]
    assert ran.tolist() == reached
    # with everybody at once and a long stage wait, later stages gather several batches'
    # survivors: a stage batch larger than any one stage-0 batch's survivors there
    sizes = run["batch_sizes"]
    assert (sizes[stage > 0].max(axis=1) > 2).any()
    assert (run["stage_kind"] == StageKind.COMPACT.code).any()


def test_a_batch_alone_runs_as_in_shrink(setup):
    """Bursts of 4 far apart, no stage wait: each burst's stage batches are shrink's schedule."""
    _, _, thr, want = setup
    arrivals = np.repeat(np.arange(N // 4) * 0.03, 4)
    run = serve(setup, arrivals, stage_wait_ms=0.0)
    assert run["exit"].tolist() == want
    kinds = [StageKind.from_code(c) for c in run["stage_kind"].tolist()]
    for burst in range(N // 4):
        reqs = list(range(4 * burst, 4 * burst + 4))
        going = tuple(sum(1 for r in reqs if want[r] > k) for k in range(3))
        plan = batch_plan("rebatch", 4, going, (True,) * 4)
        got_batches = sorted(set(run["stage_batch"][np.isin(
            run["stage_batch"], np.flatnonzero(run["batch_dispatch"] >= arrivals[4 * burst]))]))
        got = [(kinds[i], int(run["stage_k"][i]), int(run["stage_size"][i]))
               for i in range(len(kinds)) if run["stage_batch"][i] in got_batches
               and (burst == N // 4 - 1 or run["batch_dispatch"][run["stage_batch"][i]]
                    < arrivals[4 * burst + 4])]
        assert got == [(st.kind, st.k, st.batch) for st in plan.stages]
