"""Stage costs fitted on served streams (profiling/served.py): the fit recovers a known model
from synthetic streams (labelled synthetic: stage times drawn here, not measured), the
simulator applies the fitted idle factors by each replica's idle time, and a broken table is
one clear error."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from offramp.common.errors import InputError
from offramp.core.modes import CostModel, ExitMode, StageKind
from offramp.profiling.format import LatencyProfile, validate_profile
from offramp.profiling.latency import LatencyModel
from offramp.profiling.served import IDLE_EDGES_MS, fit_served_costs, idle_before, idle_bin
from offramp.profiling.synthetic import synthetic_profile
from offramp.sim.service import ServiceTimes

# The truth the synthetic streams are drawn from: a factor per idle bin on every stage.
IDLE_F = np.array([1.0, 0.95, 1.0, 1.05, 1.15, 1.3, 1.5])
BASE = {("overhead", 0): 0.05, ("segment", 0): 1.0, ("head", 0): 0.1, ("segment", 1): 0.8,
        ("head", 1): 0.1}
SIGMA = 0.2


def _stream(mean_gap_ms: float, n_batches: int, rng: np.random.Generator
            ) -> dict[str, np.ndarray]:
    """A served stream as serve_stream writes it (synthetic stage times, one replica)."""
    disp, fin, sizes, sk, kk, ss, ms, sb = [], [], [], [], [], [], [], []
    t = 0.0
    for i in range(n_batches):
        gap = rng.exponential(mean_gap_ms / 1000.0) if rng.random() < 0.7 else 0.0
        d = t + gap
        ib = idle_bin(1000.0 * gap)
        b = int(rng.integers(1, 5))
        busy = 0.0
        for (kind, k), base in BASE.items():
            x = base * (1 + 0.1 * (b - 1)) * IDLE_F[ib] * math.exp(SIGMA * rng.standard_normal())
            sk.append(StageKind(kind).code)
            kk.append(k)
            ss.append(b)
            ms.append(x)
            sb.append(i)
            busy += x / 1000.0
        busy += 0.00005  # the loop's own time around the stages
        disp.append(d)
        fin.append(d + busy)
        sizes.append([b, b])
        t = d + busy
    return {"batch_dispatch": np.array(disp), "batch_finish": np.array(fin),
            "batch_sizes": np.array(sizes), "stage_kind": np.array(sk), "stage_k": np.array(kk),
            "stage_size": np.array(ss), "stage_ms": np.array(ms), "stage_batch": np.array(sb)}


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(11)
    runs = [_stream(gap, 6000, rng) for gap in (0.3, 2.0, 8.0, 30.0)]
    stages = [(kind, k, [1, 2, 3, 4, 8]) for kind, k in BASE]
    return fit_served_costs(runs, lambda kind, k, b: 10.0, stages, ["synthetic"])


def test_the_fit_recovers_the_model(fitted):
    for kind in ("segment", "head", "overhead"):
        f = fitted["factor"][kind]
        idle, n_i = np.array(f["idle"]), np.array(f["idle_n"])
        # Relative to the most common bin, as the table presents them.
        want = IDLE_F / IDLE_F[n_i.argmax()]
        ok = n_i >= 300
        assert ok.sum() >= 6
        np.testing.assert_allclose(idle[ok], want[ok], rtol=0.04)
    # Each stage's sigma, and a base whose ratios across sizes follow the truth.
    for kind, k in BASE:
        rows = np.array(fitted["stages"][f"{kind} {k}"])
        assert rows[:4, 2] == pytest.approx(SIGMA, rel=0.15)
        np.testing.assert_allclose(rows[:4, 1] / rows[0, 1], 1 + 0.1 * np.arange(4), rtol=0.04)
        # ... and, in the most common idle bin, the drawn p50 itself.
        top = int(np.argmax(fitted["factor"][kind]["idle_n"]))
        assert rows[0, 1] == pytest.approx(BASE[kind, k] * IDLE_F[top], rel=0.04)
        # Size 8 never ran: the profile's value (10 ms at every size here) times the
        # served/profile ratio at the nearest size served (4).
        assert rows[4, 3] == 0 and rows[4, 1] == pytest.approx(rows[3, 1], rel=1e-5)
    assert fitted["noise_corr"]["within"] < 0.05  # drawn independently
    assert fitted["batch_tail_ms"]["ms"] == pytest.approx([0.05] * 4, abs=1e-6)


def test_idle_before_follows_the_sim_rule():
    disp, fin = np.array([0.0, 0.01, 0.05]), np.array([0.004, 0.02, 0.051])
    np.testing.assert_allclose(idle_before(disp, fin), [0.0, 6.0, 30.0])


def test_the_simulator_scales_stages_by_the_replica_idle_time():
    prof = synthetic_profile(batches=(1, 2, 4, 8), loop_stages=True, served_costs=True)
    table = prof.meta["served_costs"]
    model = LatencyModel(prof, costs=CostModel.SERVED)
    svc = ServiceTimes.from_latency(model, n_exits=4, max_batch=8, mode=ExitMode.KEEP, sampled=False)
    assert svc.wake is None and svc.state is not None  # the idle factors replace the wake-up
    slot = svc.slot("segment", 1)
    for idle_s in (0.0, 0.003, 0.05):
        want = table["factor"]["segment"]["idle"][idle_bin(1000 * idle_s)]
        assert svc.state.at_dispatch(idle_s)[slot] == pytest.approx(want)
    assert model.lookup("segment", 1, 4) == pytest.approx((1.0 + 0.02 * 4, 0.2))
    # A first batch after a long idle: its stages at the last bin's factor, exactly.
    from helpers import scenario

    from offramp.policies import make_policy, policy_config
    from offramp.sim.config import RunConfig, ServerConfig, WorkloadConfig
    from offramp.sim.runner import run_replication
    from offramp.sim.scenario import draw_replication
    from offramp.traces.synthetic import synthetic_trace

    trace = synthetic_trace(200, seed=1)
    policy = make_policy(policy_config(name="none")).fit(trace)
    sc = scenario(trace, policy, svc, ServerConfig(max_batch=1, max_wait_ms=0, exit_mode="none"),
                  WorkloadConfig(kind="poisson", rate_rps=5.0))
    rec, _ = run_replication(sc, draw_replication(sc, RunConfig(requests=3),
                                                  np.random.SeedSequence(0)), "fast")
    no_idle = ServiceTimes.from_latency(LatencyModel(prof), n_exits=4, max_batch=8,
                                        mode=ExitMode.KEEP, sampled=False)
    from offramp.core.execution import no_exit

    plain = no_idle.plan_s(no_exit(1, 4))
    took = rec.batch_finish[0] - rec.batch_dispatch[0] - svc.tail[1]
    assert took == pytest.approx(plain * table["factor"]["segment"]["idle"][-1], rel=1e-9)


@pytest.mark.parametrize("path, value, field", [
    (("idle_edges_ms",), [5.0, 1.0], "served_costs.idle_edges_ms"),
    (("factor", "head", "idle"), [1.0, 2.0], "served_costs.factor.head"),
    (("factor", "segment", "idle"), [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0], "served_costs.factor.segment"),
    (("stages", "segment 0"), [[1, 0.0, 0.2, 5]], "served_costs.stages.segment 0"),
    (("noise_corr",), {"within": 1.5, "across": 0}, "served_costs.noise_corr"),
])
def test_a_broken_served_table_is_one_clear_error(path, value, field):
    prof = synthetic_profile(batches=(1, 2, 4), loop_stages=True, served_costs=True)
    meta = copy.deepcopy(prof.meta)
    node = meta["served_costs"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(InputError) as err:
        validate_profile(LatencyProfile(rows=prof.rows, meta=meta, source="p.json"))
    assert f"meta.{field}" in str(err.value)


def test_bins_match_the_documented_edges():
    assert idle_bin(np.array([0.0, 0.1, 9.99, 10.0, 1e6])).tolist() == [0, 1, 5, 6, 6]
    assert len(IDLE_EDGES_MS) == 6


def test_every_slot_scales_by_its_own_stage_kind():
    # Each kind its own factors (kind j, idle bin i: 1 + j + i / 10): a slot that took another
    # kind's factor (the check and handoff slots once took compact's and check's) shows here.
    prof = synthetic_profile(batches=(1, 2, 4, 8), loop_stages=True, served_costs=True)
    n_bins = len(IDLE_EDGES_MS) + 1
    prof.meta["served_costs"]["factor"] = {
        kind.value: {"idle": [1 + kind.code + i / 10 for i in range(n_bins)]} for kind in StageKind}
    svc = ServiceTimes.from_latency(LatencyModel(prof, costs=CostModel.SERVED), n_exits=4, max_batch=8,
                                    mode=ExitMode.SHRINK, sampled=False)
    for idle_s in (0.0, 0.003, 0.05):
        got, i = svc.state.at_dispatch(idle_s), idle_bin(1000 * idle_s)
        for kind in StageKind:
            rows = [0] if kind is StageKind.OVERHEAD else range(4 if kind.is_model else 3)
            for k in rows:
                assert got[svc.slot(kind, k)] == pytest.approx(1 + kind.code + i / 10), (kind, k)
