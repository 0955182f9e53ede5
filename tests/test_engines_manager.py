"""Dynamic-OFA's runtime manager on the fast engine's compiled event loop: the same run as the
per-request reference (every request, batch and switch), whatever the routing, workload,
window unit or stage times."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import scenario
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engines import TRACE, build, check_conserved, same_run

from offramp.common.errors import InputError
from offramp.policies import make_policy, policy_config
from offramp.policies.base import StatefulPolicy
from offramp.sim import fast_numba
from offramp.sim.config import RunConfig, ServerConfig, WorkloadConfig
from offramp.sim.runner import run_replication
from offramp.sim.scenario import draw_replication
from offramp.sim.service import ServiceTimes

pytestmark = pytest.mark.skipif(not fast_numba.available(), reason="numba is not installed")
LEVELS = [{"name": "static:0"}, {"name": "entropy", "tolerance_pct": 98}, {"name": "none"}]


def manager(unit: str, target_ms: float, **kw):
    window = (dict(window=0.01, warmup=0.004, up_after=0.03) if unit == "seconds"
              else dict(window=8, warmup=3, up_after=20))
    return make_policy(policy_config(name="dynamic-ofa", levels=LEVELS, unit=unit,
                                     latency_target_ms=target_ms, accuracy_target=0.99,
                                     **{**window, **kw})).fit(TRACE)


def same_managed_run(sc, n: int, seed: int):
    """Both engines on ``sc``: the same records and the same switches."""
    reps = []

    def plan():
        reps.append(draw_replication(sc, RunConfig(requests=n), np.random.SeedSequence(seed)))
        return sc, reps[-1]

    fast, _ = same_run(plan)
    fast_rep, ref_rep = reps
    # The same switches at the same times to 1 ns, as every record's time: the reference's
    # max_wait timeout lands at now + (deadline - now), which can be 1 ulp off the deadline.
    fast_h, ref_h = fast_rep.controller.history, ref_rep.controller.history
    assert [lv for _, lv in fast_h] == [lv for _, lv in ref_h]
    np.testing.assert_allclose([t for t, _ in fast_h], [t for t, _ in ref_h], rtol=0, atol=1e-9)
    return fast, fast_rep.controller


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(["none", "keep", "shrink", "async"]), replicas=st.integers(1, 3),
       routing=st.sampled_from(["round_robin", "random", "shared", "jsq"]),
       max_batch=st.integers(1, 32), wait=st.floats(0, 5), load=st.floats(0.3, 1.3),
       sampled=st.booleans(), n=st.integers(1, 1500), seed=st.integers(0, 2**32 - 1),
       closed=st.booleans(), loop=st.sampled_from([False, True, "served"]),
       unit=st.sampled_from(["requests", "batches", "seconds"]), target_ms=st.floats(1, 12),
       switch_ms=st.sampled_from([0.0, 0.5, 2.0]), lock=st.booleans())
def test_fast_equals_reference_under_dynamic_ofa(mode, replicas, routing, max_batch, wait, load,
                                                 sampled, n, seed, closed, loop, unit,
                                                 target_ms, switch_ms, lock):
    batch_ms = 4 * (1.0 + 0.02 * max_batch) + 0.3
    rate = load * replicas * max_batch / batch_ms * 1000
    sampled = sampled or (closed and replicas > 1)  # SimPy's own order on equal instants
    sc, _ = build(0, mode, replicas, routing, max_batch, wait, rate, sampled, n, seed,
                  "closed" if closed else "poisson", loop=loop, clients=12, think_ms=0.5)()
    sc = dataclasses.replace(sc, policy=manager(unit, target_ms, switch_cost_ms=switch_ms,
                                                lock=lock, hold_s=0.02))
    fast, _ = same_managed_run(sc, n, seed)
    check_conserved(fast, n)


@pytest.mark.parametrize("routing", ["round_robin", "shared", "jsq"])
@pytest.mark.parametrize("workload", [WorkloadConfig(rate_rps=3000),
                                      WorkloadConfig(kind="closed", clients=6, think_ms=0.5)])
def test_a_batch_whose_exits_end_together_is_observed_before_the_next_begins(routing, workload):
    # All the time in segment 0: a batch's later exits end on one instant, the moment its
    # replica is free. Every leaver is observed (and may switch the level) before the
    # replica's next batch begins, as the reference's batcher does; the loop dispatched
    # after the first of those exits before.
    svc = ServiceTimes.analytic("exponential", 1.0, 4, 8)
    sc = scenario(TRACE, manager("requests", 2.0, switch_cost_ms=0.3, lock=False), svc,
                  ServerConfig(max_batch=8, max_wait_ms=0.2, replicas=2, routing=routing,
                               exit_mode="shrink"), workload)
    _, ctrl = same_managed_run(sc, 3000, 3)
    assert len(ctrl.history) > 10  # the manager moved


def test_a_long_window_grows_in_the_loop_and_switches_as_the_reference():
    # A window of 50 ms at ~9,000 requests/s holds hundreds of latencies: the loop asks for
    # room (NEED_WINDOW) and goes on with the run's own arrays.
    sc, _ = build(0, "shrink", 2, "round_robin", 16, 1.0, 9000.0, True, 10, 0)()
    sc = dataclasses.replace(sc, policy=manager("seconds", 3.0, window=0.05, warmup=0.0,
                                                up_after=0.05, hold_s=0.01))
    fast, ctrl = same_managed_run(sc, 4000, 7)
    assert ctrl.arrays["win_c"].size > 256 and len(ctrl.history) > 2


def test_auto_runs_the_manager_fast_and_a_users_stateful_policy_on_the_reference():
    sc, _ = build(0, "shrink", 2, "round_robin", 8, 1.0, 2000.0, True, 10, 0)()
    managed = dataclasses.replace(sc, policy=manager("batches", 3.0))
    rep = draw_replication(managed, RunConfig(requests=500), np.random.SeedSequence(0))
    assert run_replication(managed, rep, "auto")[1] == "fast"

    class Own(StatefulPolicy):  # a user's stateful policy: the compiled loop cannot run it
        name = "own"

        def exit_mask(self, trace, samples):
            return np.zeros((len(samples), trace.n_exits), bool)

    own = dataclasses.replace(sc, policy=Own().fit(TRACE))
    rep = draw_replication(own, RunConfig(requests=500), np.random.SeedSequence(0))
    with pytest.raises(InputError, match="stateful"):
        run_replication(own, rep, "fast")
    rep = draw_replication(own, RunConfig(requests=500), np.random.SeedSequence(0))
    assert run_replication(own, rep, "auto")[1] == "reference"
