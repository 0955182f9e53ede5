"""The fast batch-level engine against the per-request SimPy reference, and conservation."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import scenario
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from offramp.common.errors import InputError
from offramp.core.modes import ExitMode
from offramp.policies import make_policy, policy_config
from offramp.profiling.latency import LatencyModel, stage_costs
from offramp.profiling.synthetic import synthetic_profile
from offramp.sim import fast_numba
from offramp.sim.config import RunConfig, ServerConfig, WorkloadConfig
from offramp.sim.runner import run_replication, simulate
from offramp.sim.scenario import draw_replication
from offramp.sim.service import ServiceTimes
from offramp.traces.synthetic import synthetic_trace

TRACE = synthetic_trace(1500, seed=3)
PROFILE = synthetic_profile(batches=tuple(range(1, 65)))
# The same with the serving loop's exit checks and handoffs measured.
LOOP_PROFILE = synthetic_profile(batches=tuple(range(1, 65)), loop_stages=True)
# ... and with stage costs fitted on served traffic: each stage scaled by the replica's idle time.
SERVED_PROFILE = synthetic_profile(batches=tuple(range(1, 65)), loop_stages=True, served_costs=True)
POLICIES = [
    policy_config(name="none"), policy_config(name="static:1"), policy_config(name="oracle"),
    policy_config(name="entropy", tolerance_pct=98), policy_config(name="maxprob", tolerance_pct=99),
    policy_config(name="maxprob", fractions=[0.4, 0.2, 0.2, 0.2]),
]
FIELDS = ["sample", "exit", "replica", "batch", "batch_replica", "batch_sizes"]


def build(policy_i, mode, replicas, routing, max_batch, wait, rate, sampled, n, seed,
          kind="poisson", cv=1.0, contention=(), loop=False, clients=8, think_ms=1.0):
    policy = make_policy(POLICIES[policy_i]).fit(TRACE)
    # The loop profile's in-loop costs include a wake-up after idle spells; the served one
    # scales every stage by the replica's idle time before the batch.
    model = (stage_costs(SERVED_PROFILE, "served") if loop == "served"
             else stage_costs(LOOP_PROFILE, "in_loop") if loop else LatencyModel(PROFILE))
    svc = ServiceTimes.from_latency(model, n_exits=4, max_batch=max_batch,
                                    mode=ExitMode.SHRINK, sampled=sampled)
    server = ServerConfig(max_batch=max_batch, max_wait_ms=wait, exit_mode=mode,
                          replicas=replicas, routing=routing,
                          contention=[{"at_s": a, "factor": f, "replicas": [r % replicas]}
                                      for a, f, r in contention])
    wl = (WorkloadConfig(kind="closed", clients=clients, think_ms=think_ms) if kind == "closed"
          else WorkloadConfig(kind=kind, rate_rps=rate, **({"cv": cv} if kind == "gamma" else {})))
    sc = scenario(TRACE, policy, svc, server, wl)
    return lambda: (sc, draw_replication(sc, RunConfig(requests=n), np.random.SeedSequence(seed)))


def check_conserved(rec, n):
    assert rec.arrival.size == n
    assert np.isfinite(rec.finish).all() and np.isfinite(rec.dispatch).all()
    assert (rec.arrival <= rec.dispatch).all() and (rec.dispatch < rec.finish).all()
    assert ((rec.exit >= 0) & (rec.exit < TRACE.n_exits)).all()
    # Every request is in exactly one batch, and batch sizes add up to the request count.
    assert rec.batch_sizes[:, 0].sum() == n
    assert np.array_equal(np.bincount(rec.batch, minlength=len(rec.batch_dispatch)),
                          rec.batch_sizes[:, 0])
    assert np.array_equal(rec.dispatch, rec.batch_dispatch[rec.batch])
    assert (rec.finish <= rec.batch_finish[rec.batch] + 1e-12).all()
    # The breakdown: each request's time by stage kind adds up to its service time.
    parts = rec.parts
    assert (parts >= 0).all()
    np.testing.assert_allclose(parts.sum(axis=1), rec.finish - rec.dispatch, rtol=0, atol=1e-12)


def same_run(plan):
    """Run ``plan`` on both engines; they must agree (times to 1 ns). Returns both records."""
    fast, used_f = run_replication(*plan(), "fast")
    ref, used_r = run_replication(*plan(), "reference")
    assert (used_f, used_r) == ("fast", "reference")
    for f in FIELDS:
        assert np.array_equal(getattr(fast, f), getattr(ref, f)), f
    for f in ("arrival", "dispatch", "finish", "batch_dispatch", "batch_finish", "parts"):
        np.testing.assert_allclose(getattr(fast, f), getattr(ref, f), rtol=0, atol=1e-9, err_msg=f)
    return fast, ref


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Found by the property: two requests at the same instant, zero wait, a shared queue.
@example(policy_i=0, mode="none", replicas=2, routing="shared", max_batch=2, wait=0.0, load=1.0,
         sampled=False, n=3, seed=684, kind="gamma", cv=3.0, contention=[], loop=False)
# Stage costs that move with each replica's own idle time, two replicas.
@example(policy_i=3, mode="shrink", replicas=2, routing="round_robin", max_batch=8, wait=1.0,
         load=0.6, sampled=True, n=400, seed=5, kind="poisson", cv=1.0, contention=[],
         loop="served")
@given(policy_i=st.integers(0, len(POLICIES) - 1), mode=st.sampled_from(["none", "keep", "shrink", "async"]),
       replicas=st.integers(1, 3),
       routing=st.sampled_from(["round_robin", "random", "shared", "jsq"]),
       max_batch=st.integers(1, 48), wait=st.floats(0, 5), load=st.floats(0.2, 1.3),
       sampled=st.booleans(), n=st.integers(1, 600), seed=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(["poisson", "gamma"]), cv=st.floats(0.3, 3),
       contention=st.lists(st.tuples(st.floats(0, 0.05), st.floats(0.5, 3), st.integers(0, 2)),
                           max_size=3), loop=st.sampled_from([False, True, "served"]))
def test_fast_equals_reference(policy_i, mode, replicas, routing, max_batch, wait, load, sampled,
                               n, seed, kind, cv, contention, loop):
    # Rate from the load: a full batch's time through the whole model.
    batch_ms = 4 * (1.0 + 0.02 * max_batch) + 0.3
    rate = load * replicas * max_batch / batch_ms * 1000
    plan = build(policy_i, mode, replicas, routing, max_batch, wait, rate, sampled, n, seed,
                 kind, cv, contention, loop)
    fast, ref = same_run(plan)
    check_conserved(fast, n)
    check_conserved(ref, n)


@pytest.mark.skipif(not fast_numba.available(), reason="numba is not installed")
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Clients that never think: each leaver's next request arrives as it leaves, in batch order.
@example(policy_i=3, mode="shrink", replicas=2, routing="jsq", max_batch=8, wait=0.5,
         sampled=True, n=2000, seed=1, clients=16, think_ms=0.0, loop="served")
# Stage times without noise on one replica, clients thinking 0.2 ms, 5,000 requests.
@example(policy_i=4, mode="keep", replicas=1, routing="shared", max_batch=4, wait=0.0,
         sampled=False, n=5000, seed=2, clients=3, think_ms=0.2, loop=False)
@given(policy_i=st.integers(0, len(POLICIES) - 1), mode=st.sampled_from(["none", "keep", "shrink", "async"]),
       replicas=st.integers(1, 3),
       routing=st.sampled_from(["round_robin", "random", "shared", "jsq"]),
       max_batch=st.integers(1, 32), wait=st.floats(0, 5), sampled=st.booleans(),
       n=st.integers(1, 1500), seed=st.integers(0, 2**32 - 1), clients=st.integers(1, 40),
       think_ms=st.sampled_from([0.0, 0.1, 1.0, 5.0]), loop=st.sampled_from([False, True, "served"]))
def test_fast_equals_reference_in_a_closed_loop(policy_i, mode, replicas, routing, max_batch,
                                                wait, sampled, n, seed, clients, think_ms, loop):
    # Clients draw think times, samples and routes as their requests finish: the event loop
    # must take every event in the reference's order to give the same run.
    # Clients that never think and stage times without noise put two replicas' events on one
    # instant, where SimPy's own order decides: those run on the reference only.
    sampled = sampled or (replicas > 1 and think_ms == 0)
    plan = build(policy_i, mode, replicas, routing, max_batch, wait, 0.0, sampled, n, seed,
                 "closed", loop=loop, clients=clients, think_ms=think_ms)
    fast, ref = same_run(plan)
    check_conserved(fast, n)


def _fast(plan, compiled: bool):
    import os

    before = os.environ.get("OFFRAMP_NUMBA")
    os.environ["OFFRAMP_NUMBA"] = "1" if compiled else "0"
    try:
        return run_replication(*plan(), "fast")[0]
    finally:
        if before is None:
            del os.environ["OFFRAMP_NUMBA"]
        else:
            os.environ["OFFRAMP_NUMBA"] = before


@pytest.mark.skipif(not fast_numba.available(), reason="numba is not installed")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Batches of one: 2,500 noise rows per replica (three chunks), correlated noise and idle factors.
@example(policy_i=3, mode="shrink", replicas=1, routing="shared", max_batch=1, wait=0.0, load=0.5,
         sampled=True, n=2500, seed=1, contention=[], loop="served")
# Two replicas sharing a queue, batches of one: both cross noise chunks, at different rows.
@example(policy_i=3, mode="shrink", replicas=2, routing="shared", max_batch=1, wait=0.0, load=0.9,
         sampled=True, n=3000, seed=3, contention=[], loop="served")
# Many batch shapes (the loop's schedule table grows), two replicas sharing a queue.
@example(policy_i=5, mode="shrink", replicas=2, routing="shared", max_batch=48, wait=5.0,
         load=1.2, sampled=True, n=3000, seed=2, contention=[(0.01, 2.0, 1)], loop=True)
@given(policy_i=st.integers(0, len(POLICIES) - 1), mode=st.sampled_from(["none", "keep", "shrink", "async"]),
       replicas=st.integers(1, 3), routing=st.sampled_from(["round_robin", "shared"]),
       max_batch=st.integers(1, 48), wait=st.floats(0, 5), load=st.floats(0.2, 1.3),
       sampled=st.booleans(), n=st.integers(1, 3000), seed=st.integers(0, 2**32 - 1),
       contention=st.lists(st.tuples(st.floats(0, 0.05), st.floats(0.5, 3), st.integers(0, 2)),
                           max_size=2), loop=st.sampled_from([False, True, "served"]))
def test_compiled_loop_equals_the_python_loop(policy_i, mode, replicas, routing, max_batch, wait,
                                              load, sampled, n, seed, contention, loop):
    # The same loop compiled (numba) and in Python: bit-identical, breakdown included; runs
    # long enough to cross noise chunks (1024 batches) and to grow the loop's tables.
    rate = load * replicas * max_batch / (4 * (1.0 + 0.02 * max_batch) + 0.3) * 1000
    plan = build(policy_i, mode, replicas, routing, max_batch, wait, rate, sampled, n, seed,
                 "poisson", 1.0, contention, loop)
    compiled, python = _fast(plan, True), _fast(plan, False)
    for f in (*FIELDS, "arrival", "dispatch", "finish", "batch_dispatch", "batch_finish",
              "parts"):
        assert np.array_equal(getattr(compiled, f), getattr(python, f)), f


@pytest.mark.parametrize("routing", ["jsq", "round_robin"])
def test_auto_runs_jsq_fast_and_conserves(routing):
    plan = build(3, "shrink", 2, routing, 16, 1.0, 5000, True, 3000, 1)
    rec, used = run_replication(*plan(), "auto")
    assert used == ("fast" if fast_numba.available() else
                    "reference" if routing == "jsq" else "fast")
    check_conserved(rec, 3000)


def test_closed_loop_conserves():
    policy = make_policy(POLICIES[3]).fit(TRACE)
    svc = ServiceTimes.from_latency(LatencyModel(PROFILE), n_exits=4, max_batch=8,
                                    mode=ExitMode.SHRINK, sampled=True)
    res = simulate(scenario(TRACE, policy, svc, ServerConfig(max_batch=8, replicas=2, routing="jsq"),
                            WorkloadConfig(kind="closed", clients=12, think_ms=1.0)),
                   RunConfig(requests=2000, replications=1))
    check_conserved(res.records[0], 2000)


def test_fast_engine_refuses_what_it_cannot_run():
    # Closed-loop clients on two replicas whose stage times have no noise: events of both
    # replicas fall on the same instants, where only the reference knows SimPy's order.
    plan = build(0, "keep", 2, "round_robin", 8, 1.0, 0.0, False, 10, 0, "closed", think_ms=0.0)
    with pytest.raises(InputError, match="several replicas"):
        run_replication(*plan(), "fast")
    assert run_replication(*plan(), "auto")[1] == "reference"
    # Dynamic-OFA and a user's own stateful policy: tests/test_engines_manager.py.


@pytest.mark.skipif(not fast_numba.available(), reason="numba is not installed")
def test_closed_loop_for_a_duration_grows_and_equals_the_reference():
    # No request count: the event loop runs out of room (4,096 requests) and asks for more.
    sc, _ = build(3, "shrink", 3, "jsq", 8, 0.5, 0.0, True, 10, 4, "closed", loop="served",
                  clients=24, think_ms=0.5)()
    run = RunConfig(requests=None, duration_s=2.5)
    fast, _ = same_run(lambda: (sc, draw_replication(sc, run, np.random.SeedSequence(4))))
    assert fast.arrival.size > 2 * 4096
    check_conserved(fast, fast.arrival.size)


def test_same_seed_same_results_different_seed_different():
    def go(seed):
        policy = make_policy(POLICIES[4]).fit(TRACE)
        svc = ServiceTimes.from_latency(LatencyModel(PROFILE), n_exits=4, max_batch=32,
                                        mode=ExitMode.SHRINK, sampled=True)
        return simulate(scenario(TRACE, policy, svc, ServerConfig(replicas=2, routing="random"),
                                 WorkloadConfig(rate_rps=8000)),
                        RunConfig(requests=5000, replications=2,
                                                                 seed=seed))
    a, b, c = go(11), go(11), go(12)
    for ra, rb, rc in zip(a.records, b.records, c.records, strict=True):
        for f in ("arrival", "finish", "exit", "sample", "batch"):
            assert np.array_equal(getattr(ra, f), getattr(rb, f))
        assert not np.array_equal(ra.finish, rc.finish)
    assert a.runs == b.runs
    # Replications are independent draws.
    assert not np.array_equal(a.records[0].arrival, a.records[1].arrival)


def test_confidence_interval_covers_the_true_mean_in_95_percent_of_studies():
    # Accuracy of a replication is the mean of correct[sample, exit] over samples drawn
    # uniformly from the test split, so its expectation is known exactly: the fitted policy's
    # accuracy on the whole test split. 400 independent studies of 4 replications each: the
    # Student-t 95% interval must cover it in 95% of them (binomial sd 1.1%; a normal
    # quantile instead of t would cover ~86%, a 90% interval ~90%).
    policy = make_policy(POLICIES[3]).fit(TRACE)
    test = TRACE.indices("test")
    truth = TRACE.correct[test, policy.exit_index(TRACE, test)].mean()
    svc = ServiceTimes.from_latency(LatencyModel(PROFILE), n_exits=4, max_batch=8,
                                    mode=ExitMode.SHRINK, sampled=False)
    covered, widths = 0, []
    for seed in range(400):
        res = simulate(scenario(TRACE, policy, svc, ServerConfig(max_batch=8),
                                WorkloadConfig(rate_rps=500)),
                       RunConfig(requests=60, replications=4, warmup_fraction=0.0, seed=seed))
        m = res.summary["accuracy"]
        assert m["mean"] == pytest.approx(np.mean([r["accuracy"] for r in res.runs]))
        covered += abs(m["mean"] - truth) <= m["ci95"]
        widths.append(m["ci95"])
    assert 0.925 <= covered / 400 <= 0.975
    assert np.all(np.array(widths) > 0)


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_contention_step_slows_every_stage(engine):
    base = build(2, "shrink", 1, "round_robin", 8, 1.0, 40, False, 400, 4)()
    slowed = build(2, "shrink", 1, "round_robin", 8, 1.0, 40, False, 400, 4,
                   contention=[(0.0, 1.5, 0)])()
    a, _ = run_replication(*base, engine)
    b, _ = run_replication(*slowed, engine)
    # At low load every batch starts on its own deadline, so service times scale by exactly 1.5.
    alone = a.dispatch == b.dispatch
    assert alone.mean() > 0.9
    np.testing.assert_allclose((b.finish - b.dispatch)[alone], 1.5 * (a.finish - a.dispatch)[alone],
                               rtol=1e-9)


@pytest.mark.parametrize("engine", ["auto", "reference"])
def test_closed_loop_round_robin_alternates_replicas(engine):
    # Each engine routes each new request itself, as it is submitted.
    policy = make_policy(POLICIES[0]).fit(TRACE)
    svc = ServiceTimes.from_latency(LatencyModel(PROFILE), n_exits=4, max_batch=4,
                                    mode=ExitMode.SHRINK, sampled=False)
    for replicas in (2, 3):
        server = ServerConfig(max_batch=4, replicas=replicas, routing="round_robin")
        res = simulate(scenario(TRACE, policy, svc, server,
                                WorkloadConfig(kind="closed", clients=6, think_ms=0.5)),
                       RunConfig(requests=300, replications=1, engine=engine))
        assert res.engine == ("fast" if engine == "auto" and fast_numba.available()
                              else "reference")
        rec = res.records[0]
        assert rec.replica.tolist() == [i % replicas for i in range(300)]


def test_closed_loop_random_routing_stays_on_real_replicas():
    policy = make_policy(POLICIES[0]).fit(TRACE)
    svc = ServiceTimes.from_latency(LatencyModel(PROFILE), n_exits=4, max_batch=4,
                                    mode=ExitMode.SHRINK, sampled=False)
    res = simulate(scenario(TRACE, policy, svc, ServerConfig(max_batch=4, replicas=3, routing="random"),
                            WorkloadConfig(kind="closed", clients=6, think_ms=0.5)),
                   RunConfig(requests=600, replications=1))
    replica = res.records[0].replica
    assert sorted(np.unique(replica).tolist()) == [0, 1, 2]
    # Uniform routing: each replica takes about a third (binomial sd 1.9 % at 600 requests).
    assert (np.abs(np.bincount(replica, minlength=3) / 600 - 1 / 3) < 0.08).all()


def test_recorded_arrivals_on_fixed_stage_times_route_by_jsq_on_the_reference(tmp_path):
    # Recorded arrival times and stage times without noise can put an arrival on the instant a
    # request finishes; SimPy takes whichever it scheduled first, so auto takes the reference.
    csv = tmp_path / "arrivals.csv"
    csv.write_text("arrival_s\n" + "\n".join(f"{i / 1024:.10f}" for i in range(50)) + "\n")
    policy = make_policy(POLICIES[3]).fit(TRACE)
    for latency, want in ((False, "reference"), (True, "fast")):
        svc = ServiceTimes.from_latency(LatencyModel(PROFILE), n_exits=4, max_batch=4,
                                        mode=ExitMode.SHRINK, sampled=latency)
        sc = scenario(TRACE, policy, svc, ServerConfig(max_batch=4, replicas=2, routing="jsq"),
                      WorkloadConfig(kind="replay", path=str(csv)))
        rep = draw_replication(sc, RunConfig(requests=50), np.random.SeedSequence(0))
        assert run_replication(sc, rep, "auto")[1] == (want if fast_numba.available()
                                                       else "reference")


@pytest.mark.parametrize("workload", [WorkloadConfig(rate_rps=3000),
                                      WorkloadConfig(kind="closed", clients=6, think_ms=0.5)])
def test_exits_that_finish_together_fit_the_event_loop(workload):
    # An analytic service puts all the time in segment 0: every later exit of a batch ends on
    # the same instant, so finishes pile up on it while the replica dispatches its next batch
    # (the event loop grows its heap of pending finishes; it overran it before).
    policy = make_policy(POLICIES[3]).fit(TRACE)
    svc = ServiceTimes.analytic("exponential", 1.0, 4, 8)
    sc = scenario(TRACE, policy, svc, ServerConfig(max_batch=8, max_wait_ms=0.2, replicas=2,
                                                   routing="jsq", exit_mode="shrink"), workload)
    plan = lambda: (sc, draw_replication(sc, RunConfig(requests=3000),  # noqa: E731
                                         np.random.SeedSequence(3)))
    same_run(plan)
    if fast_numba.available():  # the case is met: more finishes pending than a batch per replica
        from offramp.sim import fast_dynamic, fast_events

        run = fast_dynamic._EventRun(*plan(), True)
        while (status := run.step()) != fast_events.DONE:
            run.answer(status)
        assert run.fin[0].size > 2 * 4 + 1
