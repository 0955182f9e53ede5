"""Dynamic-OFA's runtime manager: its rules step by step, then under a contention step."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import crafted_trace, scenario

from offramp.core.modes import ExitMode
from offramp.policies.baselines import NoExit, StaticExit
from offramp.policies.budget import exp_fractions
from offramp.policies.confidence import MaxProb
from offramp.policies.costs import exit_costs
from offramp.policies.dynamic_ofa import DynamicOFA, ManagerRun
from offramp.profiling.latency import LatencyModel
from offramp.profiling.synthetic import synthetic_profile
from offramp.sim.config import RunConfig, ServerConfig, WorkloadConfig
from offramp.sim.runner import simulate
from offramp.sim.service import ServiceTimes
from offramp.traces.synthetic import synthetic_trace


def manager(**kw) -> ManagerRun:
    # Level accuracies on val: exit 0 right for 1/4, exit 1 for 1/2, the full model for all.
    rows = [[True, True, True], [False, True, True], [False, False, True], [False, False, True]]
    tr = crafted_trace(rows, n_val=4)
    args = dict(latency_target_ms=10.0, accuracy_target=1.0, window=4, warmup=2, up_after=10,
                switch_cost_ms=7.0, hold_s=5.0)
    m = DynamicOFA([StaticExit(0), StaticExit(1), NoExit()], **{**args, **kw}).fit(tr)
    return m.controller(2)


def feed(m: ManagerRun, t0: float, latency_ms: float, n: int, dt: float = 0.01) -> float:
    for i in range(n):
        m.observe(t0 + i * dt, latency_ms / 1000.0, 0, 0)
    return t0 + n * dt


def test_manager_rules_step_by_step():
    m = manager()
    assert m.m.level_accuracy_ == [0.25, 0.5, 1.0] and m.level == 2
    t = feed(m, 0.0, 50.0, 5)  # 2 warm-up + 3: the window is not full yet
    assert m.level == 2
    t = feed(m, t, 50.0, 1)  # full window over target: down one level at once
    assert m.level == 1 and m.history[-1] == pytest.approx((0.05, 1))
    # The switch costs each replica one stall, before its next batch; then decisions change.
    assert m.active == [2, 2]
    assert m.begin_batch(t, 0) == pytest.approx(0.007) and m.begin_batch(t, 0) == 0.0
    # Replica 1's running batch keeps deciding at its old level until it begins a new one.
    assert m.active == [1, 2]
    assert m.begin_batch(t, 1) == pytest.approx(0.007) and m.active == [1, 1]
    # Within target, accuracy below target: up after up_after = 10 requests at this level.
    t = feed(m, t, 5.0, 9)
    assert m.level == 1
    t = feed(m, t, 5.0, 1)
    assert m.level == 2
    # The rise fails (a violation in its first window): down, and no rise for hold_s = 5 s.
    t = feed(m, t, 50.0, 6)
    assert m.level == 1
    t_fail = m.history[-1][0]
    t = feed(m, t, 5.0, 50)
    assert m.level == 1
    feed(m, t_fail + 5.0, 5.0, 1)
    assert m.level == 2
    assert [lvl for _, lvl in m.history] == [2, 1, 2, 1, 2]


def test_no_lock_rises_again_and_outliers_are_dropped():
    m = manager(lock=False)
    t = feed(m, 0.0, 50.0, 6)
    t = feed(m, t, 5.0, 10)
    t = feed(m, t, 50.0, 6)
    t = feed(m, t, 5.0, 10)
    assert [lvl for _, lvl in m.history] == [2, 1, 2, 1, 2]
    # Window 5: the largest and smallest latencies are dropped, so one spike is no violation.
    m = manager(window=5, warmup=0)
    feed(m, 0.0, 6.0, 4)
    feed(m, 1.0, 500.0, 1)
    assert m.level == 2 and m.window_mean_ms() == pytest.approx(6.0)
    feed(m, 2.0, 500.0, 1)
    assert m.level == 1


def test_manager_holds_latency_target_under_contention():
    tr = synthetic_trace(2000)
    prof = synthetic_profile()
    c = exit_costs(prof)
    levels = [MaxProb(fractions=[1, 0, 0, 0]), MaxProb(fractions=exp_fractions(c, 1.8)),
              MaxProb(fractions=exp_fractions(c, 2.6)), NoExit()]
    target = 7.5
    m = DynamicOFA(levels, latency_target_ms=target, accuracy_target=1.0).fit(tr)
    assert m.level_accuracy_ == sorted(m.level_accuracy_)
    server = ServerConfig(max_batch=8, max_wait_ms=1.0, contention=[{"at_s": 10, "factor": 1.5}])
    svc = ServiceTimes.from_latency(LatencyModel(prof), n_exits=4, max_batch=8,
                                    mode=ExitMode.SHRINK, sampled=False)
    res = simulate(scenario(tr, m, svc, server,
                            WorkloadConfig(rate_rps=300)),
                   RunConfig(duration_s=20, replications=1, engine="reference"))
    assert res.engine == "reference"
    rec = res.records[0]
    lat_ms = 1000 * (rec.finish - rec.arrival)
    # Without the manager the top level misses the target once contended (checked here).
    top = simulate(scenario(tr, NoExit().fit(tr), svc, server,
                            WorkloadConfig(rate_rps=300)),
                   RunConfig(duration_s=20, replications=1, engine="reference")).records[0]
    top_ms = 1000 * (top.finish - top.arrival)
    assert top_ms[top.arrival < 10].mean() < target < top_ms[top.arrival > 11].mean()
    # The manager moves down within half a second of the slowdown...
    history = res.policy_history[0]
    downs = [(t, lvl) for (t, lvl), (_, prev) in zip(history[1:], history, strict=False)
             if lvl < prev and t >= 10]
    assert downs and downs[0][0] < 10.5
    # ...and every second after that, the mean latency is back under target.
    for lo in range(11, 20):
        sel = (rec.finish >= lo) & (rec.finish < lo + 1)
        assert lat_ms[sel].mean() < target
    assert history[-1][1] < len(levels) - 1 and np.mean(rec.exit < 3) > 0
    # The breakdown holds with the switches' stalls (counted as overhead): parts add up.
    parts = rec.parts
    np.testing.assert_allclose(parts.sum(axis=1), rec.finish - rec.dispatch, atol=1e-12)


def _contended_study():
    tr = synthetic_trace(1500, seed=2)
    prof = synthetic_profile()
    c = exit_costs(prof)
    server = ServerConfig(max_batch=8, max_wait_ms=1.0, contention=[{"at_s": 3, "factor": 1.6}])
    svc = ServiceTimes.from_latency(LatencyModel(prof), n_exits=4, max_batch=8,
                                    mode=ExitMode.SHRINK, sampled=True)

    def fit():
        levels = [MaxProb(fractions=[1, 0, 0, 0]), MaxProb(fractions=exp_fractions(c, 2.2)),
                  NoExit()]
        return DynamicOFA(levels, latency_target_ms=7.0, accuracy_target=1.0, window=10,
                          warmup=5, up_after=30).fit(tr)

    return tr, svc, server, fit


def test_one_fitted_manager_serves_many_runs_at_once():
    import copy
    import threading

    tr, svc, server, fit = _contended_study()
    run = RunConfig(duration_s=6, replications=2, seed=4, engine="reference")

    def go(pol):
        return simulate(scenario(tr, pol, svc, server, WorkloadConfig(rate_rps=900)), run)

    apart = [go(fit()), go(fit())]
    shared = fit()
    before = copy.deepcopy(vars(shared))
    together = [go(shared), go(shared)]
    threaded: list = [None, None]

    def worker(i):
        threaded[i] = go(shared)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(apart[0].policy_history[0]) > 2  # the manager did switch levels
    for res in together + threaded:
        assert res.policy_history == apart[0].policy_history
        assert res.runs == apart[0].runs
        for a, b in zip(res.records, apart[0].records, strict=True):
            assert np.array_equal(a.finish, b.finish) and np.array_equal(a.exit, b.exit)
    # The fitted manager itself never changed.
    after = vars(shared)
    assert before.keys() == after.keys()
    assert all(type(before[k]) is type(after[k]) for k in before)
    assert before["level_accuracy_"] == after["level_accuracy_"]
    assert before["start_level_"] == after["start_level_"]


def test_a_window_counted_in_batches_ignores_how_many_requests_each_batch_holds():
    m = manager(window=2, warmup=1, up_after=0, unit="batches")
    m.begin_batch(0.0, 0)
    feed(m, 0.0, 20.0, 50)  # fifty slow requests, one batch: still warming up
    assert m.level == 2 and np.isnan(m.window_mean_ms(0.5))
    m.begin_batch(0.5, 0)
    feed(m, 0.5, 20.0, 3)  # batch 2: the window spans one batch of two
    assert m.level == 2
    m.begin_batch(0.6, 0)
    feed(m, 0.6, 20.0, 1)  # batch 3: full, mean 20 ms > 10 ms -> down
    assert m.level == 1 and m.history[-1] == (0.6, 1)
    # The window holds the last two dispatches' requests, no more.
    w = manager(window=2, warmup=0, up_after=1000, unit="batches")
    for b in range(1, 5):
        w.begin_batch(0.1 * b, 0)
        w.observe(0.1 * b, 0.001, 0, 0)
    assert [c for c, _ in w._recent] == [3.0, 4.0]
    # Counting requests instead, the first fifty would have moved it at once.
    r = manager(window=2, warmup=1, up_after=0)
    r.begin_batch(0.0, 0)
    feed(r, 0.0, 20.0, 50)
    assert r.level == 0


def test_a_window_counted_in_seconds_spans_simulated_time():
    m = manager(window=0.1, warmup=0.05, up_after=10, unit="seconds")
    m.observe(0.01, 0.020, 0, 0)  # in the warm-up
    m.observe(0.06, 0.020, 0, 0)  # in the window, which spans 0.01 s of 0.1
    assert m.level == 2 and np.isnan(m.window_mean_ms(0.06))
    m.observe(0.16, 0.020, 0, 0)  # 0.11 s past the warm-up: full, 20 ms > 10 ms
    assert m.level == 1 and m.history[-1] == (0.16, 1)
    # The clock restarts at the switch: the next 0.05 s are warm-up again.
    m.observe(0.20, 0.020, 0, 0)
    assert m.level == 1 and not m._recent
    # Old latencies leave the window as time passes.
    m.observe(0.22, 0.001, 0, 0)
    m.observe(0.40, 0.001, 0, 0)
    assert [round(c, 2) for c, _ in m._recent] == [0.24]
    assert m.window_mean_ms() == pytest.approx(1.0)  # now: the last observation's time
