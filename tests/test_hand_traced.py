"""Exact, hand-traced scenarios: fixed arrivals, fixed stage latencies, expected timestamps.

Profile: overhead 0.1 ms; segment k at batch b 1 + 0.1·b ms; head 0.5 ms; compaction of s
survivors 0.2 + 0.05·s ms. Three exits, max_batch 4, max_wait 2 ms, one replica. Requests
arrive at 0, 0.5, 1 and 10 ms; by the oracle they exit at 0, 2, 1 and 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import affine_profile, crafted_trace, fixed_run

from offramp.core.modes import CostModel, ExitMode
from offramp.policies.baselines import Oracle, StaticExit
from offramp.profiling.latency import LatencyModel
from offramp.sim.config import ServerConfig
from offramp.sim.runner import run_replication
from offramp.sim.service import ServiceTimes

TRACE = crafted_trace([[True, True, True], [False, False, True], [False, True, True],
                       [True, False, True]])
ARRIVALS = [0.0, 0.5, 1.0, 10.0]
ENGINES = ["fast", "reference"]


def run(mode: str, policy=None, profile=None, engine="fast", max_wait=2.0):
    profile = profile or affine_profile(3, range(1, 5))
    server = ServerConfig(max_batch=4, max_wait_ms=max_wait, exit_mode=mode)
    svc = ServiceTimes.from_latency(LatencyModel(profile), n_exits=3, max_batch=4,
                                    mode=ExitMode(mode), sampled=False)
    policy = (policy or Oracle()).fit(TRACE)
    sc, rep = fixed_run(TRACE, policy, svc, server, ARRIVALS, [0, 1, 2, 3])
    rec, used = run_replication(sc, rep, engine)
    assert used == engine
    return rec


@pytest.mark.parametrize("engine", ENGINES)
def test_shrink_pays_compaction(engine):
    rec = run("shrink", engine=engine)
    # Batch 1 = requests 0-2, dispatched at the 2 ms deadline. 2 + 0.1 overhead, + 1.3 seg0(3),
    # + 0.5 head -> 3.9 (req 0 leaves); + 0.3 compact(2), + 1.2 seg1(2), + 0.5 -> 5.9 (req 2);
    # + 0.25 compact(1), + 1.1 seg2(1), + 0.5 -> 7.75 (req 1).
    # Batch 2 = request 3 alone, the last of the stream, so at once at 10 ms: 10.1 + 1.1 + 0.5
    # = 11.7.
    assert rec.dispatch * 1000 == pytest.approx([2.0, 2.0, 2.0, 10.0], abs=1e-9)
    assert rec.finish * 1000 == pytest.approx([3.9, 7.75, 5.9, 11.7], abs=1e-9)
    assert rec.exit.tolist() == [0, 2, 1, 0]
    assert rec.batch.tolist() == [0, 0, 0, 1]
    assert rec.batch_sizes.tolist() == [[3, 2, 1], [1, 0, 0]]


@pytest.mark.parametrize("engine", ENGINES)
def test_keep_runs_full_batch_until_all_exit(engine):
    rec = run("keep", engine=engine)
    # 2.1, + 1.3 + 0.5 -> 3.9 (req 0); + 1.3 + 0.5 -> 5.7 (req 2); + 1.3 + 0.5 -> 7.5 (req 1).
    assert rec.finish * 1000 == pytest.approx([3.9, 7.5, 5.7, 11.7], abs=1e-9)
    assert rec.batch_sizes.tolist() == [[3, 3, 3], [1, 0, 0]]


@pytest.mark.parametrize("engine", ENGINES)
def test_none_runs_backbone_and_last_head(engine):
    rec = run("none", engine=engine)
    # 2.1 + 3 × 1.3 + 0.5 = 6.5; request 3: 10.1 + 3 × 1.1 + 0.5 = 13.9. Everyone at exit 2.
    assert rec.finish * 1000 == pytest.approx([6.5, 6.5, 6.5, 13.9], abs=1e-9)
    assert rec.exit.tolist() == [2, 2, 2, 2]


@pytest.mark.parametrize("engine", ENGINES)
def test_keep_equals_none_when_nobody_exits_early_and_heads_are_free(engine):
    profile = affine_profile(3, range(1, 5), head=(0.0, 0.0), last_head=(0.5, 0.0))
    keep = run("keep", policy=StaticExit(2), profile=profile, engine=engine)
    none = run("none", policy=StaticExit(2), profile=profile, engine=engine)
    assert keep.finish == pytest.approx(none.finish, abs=1e-12)
    # With 0.5 ms early heads, keep pays them on top: two early heads per batch.
    keep_paid = run("keep", policy=StaticExit(2), engine=engine)
    assert (keep_paid.finish - none.finish) * 1000 == pytest.approx([1.0] * 4, abs=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
def test_full_batch_dispatches_on_last_arrival_and_zero_wait(engine):
    # max_wait 0: a free server takes what is queued at once. Request 0 alone: 0.1 + 3 × 1.1
    # + 0.5 = 3.9; requests 1 and 2 queued meanwhile go together: 3.9 + 0.1 + 3 × 1.2 + 0.5.
    rec = run("none", engine=engine, max_wait=0.0)
    assert rec.dispatch * 1000 == pytest.approx([0.0, 3.9, 3.9, 10.0], abs=1e-9)
    assert rec.finish * 1000 == pytest.approx([3.9, 8.1, 8.1, 13.9], abs=1e-9)
    assert rec.batch.tolist() == [0, 1, 1, 2]


@pytest.mark.parametrize("engine", ENGINES)
def test_batch_closes_when_max_batch_is_reached(engine):
    profile = affine_profile(3, range(1, 5))
    server = ServerConfig(max_batch=2, max_wait_ms=5.0, exit_mode="none")
    svc = ServiceTimes.from_latency(LatencyModel(profile), n_exits=3, max_batch=2,
                                    mode=ExitMode.KEEP, sampled=False)
    sc, rep = fixed_run(TRACE, Oracle().fit(TRACE), svc, server, ARRIVALS, [0, 1, 2, 3])
    rec, _ = run_replication(sc, rep, engine)
    # Batch 1 closes at 0.5 ms when its 2nd request arrives: 0.5 + 0.1 + 3 × 1.2 + 0.5 = 4.7.
    # Request 2 (1 ms) is alone when the server frees at 4.7, so it waits for its deadline at
    # 6 ms: 6 + 0.1 + 3.3 + 0.5 = 9.9. Request 3 ends the stream: at once, 10 -> 13.9.
    assert rec.dispatch * 1000 == pytest.approx([0.5, 0.5, 6.0, 10.0], abs=1e-9)
    assert rec.finish * 1000 == pytest.approx([4.7, 4.7, 9.9, 13.9], abs=1e-9)


def test_bucketed_engine_rounds_batch_up():
    profile = affine_profile(3, range(1, 5))
    model = LatencyModel(profile, engine_sizes=[2, 4])
    assert model.lookup("segment", 0, 3) == (pytest.approx(1.4), 0.0)
    assert model.lookup("segment", 0, 1) == (pytest.approx(1.2), 0.0)
    # A batch of exactly an engine size runs on that engine, not the next one up.
    assert model.lookup("segment", 0, 2) == (pytest.approx(1.2), 0.0)
    assert model.lookup("segment", 0, 4) == (pytest.approx(1.4), 0.0)


@pytest.mark.parametrize("engine", ENGINES)
def test_disabled_exit_head_is_skipped(engine):
    from offramp.policies.table import ExitTable, trace_fingerprint

    # Exit 1 is disabled (as PAME/Gati do): its head is not run and nobody leaves there.
    table = ExitTable(np.array([0, 2, 2, 0]), trace_fingerprint(TRACE), "placed",
                      active=[True, False, True])
    rec = run("shrink", policy=table, engine=engine)
    # 2.1 + 1.3 + 0.5 = 3.9 (req 0); + 0.3 compact(2) + 1.2 seg1(2) [no head 1] + 1.2 seg2(2)
    # + 0.5 head 2 = 7.1 (reqs 1, 2). Request 3 as before: 11.7.
    assert rec.finish * 1000 == pytest.approx([3.9, 7.1, 7.1, 11.7], abs=1e-9)
    assert rec.exit.tolist() == [0, 2, 2, 0]


# The serving loop's own stages: check(b) = 0.03 + 0.01·b after every early exit decision,
# handoff(b) = 0.02 + 0.005·b wherever a batch goes on whole (see core/execution.py).
LOOP = affine_profile(3, range(1, 5), check=(0.03, 0.01), handoff=(0.02, 0.005))


@pytest.mark.parametrize("engine", ENGINES)
def test_shrink_pays_checks_and_compaction(engine):
    rec = run("shrink", profile=LOOP, engine=engine)
    # Batch 1 (reqs 0-2) at 2 ms: 2.1, + 1.3 seg0(3), + 0.5 head, + 0.06 check(3) -> 3.96
    # (req 0); + 0.3 compact(2), + 1.2, + 0.5, + 0.05 check(2) -> 6.01 (req 2); + 0.25
    # compact(1), + 1.1, + 0.5 -> 7.86 (req 1: the last exit takes no decision).
    # Batch 2 (req 3, the stream's last) at once at 10: 10.1 + 1.1 + 0.5 + 0.04 check(1) ->
    # 11.74; nobody goes on.
    assert rec.finish * 1000 == pytest.approx([3.96, 7.86, 6.01, 11.74], abs=1e-9)
    assert rec.batch_finish * 1000 == pytest.approx([7.86, 11.74], abs=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_breakdown_by_stage_kind(engine):
    from offramp.core.modes import StageKind as K
    from offramp.sim.metrics import request_parts_ms

    parts = request_parts_ms(run("shrink", profile=LOOP, engine=engine))
    # The same schedule as above, by kind. Request 1 (exit 2): overhead 0.1; segments 1.3 +
    # 1.2 + 1.1; heads 3 x 0.5; checks 0.06 + 0.05; compaction 0.3 + 0.25; no handoff.
    # Request 0 (exit 0): 0.1, 1.3, 0.5, 0.06. Request 3 (batch 2, exit 0): 0.1, 1.1, 0.5, 0.04.
    expect = {K.OVERHEAD: [0.1, 0.1, 0.1, 0.1], K.SEGMENT: [1.3, 3.6, 2.5, 1.1],
              K.HEAD: [0.5, 1.5, 1.0, 0.5], K.CHECK: [0.06, 0.11, 0.11, 0.04],
              K.COMPACT: [0.0, 0.55, 0.3, 0.0], K.HANDOFF: [0.0, 0.0, 0.0, 0.0]}
    for kind, ms in expect.items():
        assert parts[kind] == pytest.approx(ms, abs=1e-9), kind


@pytest.mark.parametrize("engine", ENGINES)
def test_the_wake_up_counts_as_overhead(engine):
    from offramp.core.modes import StageKind as K
    from offramp.sim.metrics import request_parts_ms

    profile = affine_profile(3, range(1, 5))
    profile.meta["wake_ms"] = {"batch": [1, 4], "idle_ms": [4.0], "extra_ms": [[0.4], [0.4]]}
    svc = ServiceTimes.from_latency(LatencyModel(profile, costs=CostModel.IN_LOOP), n_exits=3,
                                    max_batch=4, mode=ExitMode.KEEP, sampled=False)
    server = ServerConfig(max_batch=4, max_wait_ms=0.0, exit_mode="none")
    sc, rep = fixed_run(TRACE, Oracle().fit(TRACE), svc, server, [10.0, 12.0], [0, 1])
    parts = request_parts_ms(run_replication(sc, rep, engine)[0])
    # Request 0 after 10 ms idle: 0.4 wake + 0.1 dispatch; request 1 right after: 0.1 only.
    assert parts[K.OVERHEAD] == pytest.approx([0.5, 0.1], abs=1e-9)
    assert parts[K.SEGMENT] == pytest.approx([3.3, 3.3], abs=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
def test_shrink_hands_on_when_nobody_exits(engine):
    rec = run("shrink", policy=StaticExit(2), profile=LOOP, engine=engine)
    # Nobody leaves at exits 0 and 1: no compaction, the batch is handed on whole.
    # 2.1 + 1.3 + 0.5 + 0.06 + 0.035 handoff(3) + 1.3 + 0.5 + 0.06 + 0.035 + 1.3 + 0.5 = 7.69.
    # Batch 2 (at once, 10 ms): 10.1 + 1.1 + 0.5 + 0.04 + 0.025 + 1.1 + 0.5 + 0.04 + 0.025 + 1.1
    # + 0.5 = 15.03.
    assert rec.finish * 1000 == pytest.approx([7.69, 7.69, 7.69, 15.03], abs=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
def test_keep_pays_checks_and_handoffs(engine):
    rec = run("keep", profile=LOOP, engine=engine)
    # 2.1 + 1.3 + 0.5 + 0.06 -> 3.96 (req 0); + 0.035 handoff(3) + 1.3 + 0.5 + 0.06 -> 5.855
    # (req 2); + 0.035 + 1.3 + 0.5 -> 7.69 (req 1). Batch 2 as in shrink: 11.74.
    assert rec.finish * 1000 == pytest.approx([3.96, 7.69, 5.855, 11.74], abs=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
def test_none_pays_handoffs_and_no_checks(engine):
    rec = run("none", profile=LOOP, engine=engine)
    # 2.1 + 1.3 + 0.035 + 1.3 + 0.035 + 1.3 + 0.5 = 6.57 for the whole batch;
    # batch 2 (at once, 10 ms): 10.1 + 1.1 + 0.025 + 1.1 + 0.025 + 1.1 + 0.5 = 13.95.
    assert rec.finish * 1000 == pytest.approx([6.57, 6.57, 6.57, 13.95], abs=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_replica_that_gets_no_request_does_not_stop_the_others(engine):
    # Three replicas with their own queues; the routing sends nothing to replica 1.
    from helpers import fixed_run

    server = ServerConfig(max_batch=4, max_wait_ms=2.0, exit_mode="none", replicas=3,
                          routing="random")
    svc = ServiceTimes.from_latency(LatencyModel(affine_profile(3, range(1, 5))), n_exits=3, max_batch=4,
                                    mode=ExitMode.KEEP, sampled=False)
    sc, rep = fixed_run(TRACE, Oracle().fit(TRACE), svc, server, [0.0, 0.5], [0, 1], routes=[0, 2])
    rec, _ = run_replication(sc, rep, engine)
    # Each alone; the stream ends at 0.5 ms, so both go then: 0.5 + 0.1 + 3 x 1.1 + 0.5.
    assert rec.replica.tolist() == [0, 2]
    assert rec.finish * 1000 == pytest.approx([4.4, 4.4], abs=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_batch_after_an_idle_spell_pays_the_wake_up(engine):
    # Wake table: +0.4 ms after >= 4 ms idle (linear from 0 at 0 ms), the same at every size.
    profile = affine_profile(3, range(1, 5))
    profile.meta["wake_ms"] = {"batch": [1, 4], "idle_ms": [4.0], "extra_ms": [[0.4], [0.4]]}
    svc = ServiceTimes.from_latency(LatencyModel(profile, costs=CostModel.IN_LOOP), n_exits=3, max_batch=4,
                                    mode=ExitMode.KEEP, sampled=False)
    server = ServerConfig(max_batch=4, max_wait_ms=0.0, exit_mode="none")
    sc, rep = fixed_run(TRACE, Oracle().fit(TRACE), svc, server, [10.0, 12.0, 30.0], [0, 1, 2])
    rec, _ = run_replication(sc, rep, engine)
    # Request 0 at 10 ms after 10 ms idle: + 0.4 wake + 0.1 + 3 x 1.1 + 0.5 = 14.3. Request 1
    # arrives at 12 while busy: no idle, at 14.3 -> 18.2. Request 2 at 30 after 11.8 ms idle.
    assert rec.finish * 1000 == pytest.approx([14.3, 18.2, 34.3], abs=1e-9)
    # Without in_loop the table is ignored.
    plain = ServiceTimes.from_latency(LatencyModel(profile), n_exits=3, max_batch=4,
                                      mode=ExitMode.KEEP, sampled=False)
    assert plain.wake is None
    # Half-way up the ramp: 2 ms idle -> 0.2 ms.
    assert svc.wake_s(2, 0.002) == pytest.approx(0.0002)


@pytest.mark.parametrize("compiled", ["1", "0"])
def test_an_exit_after_stages_of_no_time_keeps_its_finish(compiled, monkeypatch):
    # Segment 1 and head 1 cost nothing here, so nothing timed lies between exits 0 and 1; the
    # fast engine leaves zero-time stages out of its schedules, and must still end exit 1's
    # leavers when exit 0's end (found by review: they once got finish 0.0).
    monkeypatch.setenv("OFFRAMP_NUMBA", compiled)
    profile = affine_profile(3, range(1, 5))
    for row in profile.rows:
        if (row["kind"], row["k"]) in (("segment", 1), ("head", 1)):
            row.update(p50_ms=0.0, mean_ms=0.0, p99_ms=0.0, std_ms=0.0)
    for mode in ("keep", "shrink"):
        fast = run(mode, profile=profile, engine="fast")
        ref = run(mode, profile=profile, engine="reference")
        assert np.isfinite(fast.finish).all()
        np.testing.assert_allclose(fast.finish, ref.finish, rtol=0, atol=1e-12)
        np.testing.assert_allclose(fast.parts, ref.parts, rtol=0, atol=1e-12)
        # Request 2 leaves at exit 1: when exit 0's leavers do (shrink pays its compaction).
        assert fast.finish[2] == pytest.approx(
            fast.finish[0] + (0.0003 if mode == "shrink" else 0.0), abs=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_async_lookups_run_beside_the_backbone(engine):
    rec = run("async", profile=LOOP, engine=engine)
    # Batch 1 (reqs 0-2) at 2 ms: 2.1, + 1.3 seg0(3) -> 3.4; exit 0's lookup beside it: 3.4 +
    # 0.5 head + 0.06 check(3) -> 3.96 (req 0). The backbone at once: + 0.035 handoff(3) + 1.3
    # -> 4.735; exit 1's lookup (exit 0's ended at 3.96: no wait): + 0.5 + 0.06 -> 5.295
    # (req 2). Backbone: + 0.035 + 1.3 -> 6.07, the last head + 0.5 -> 6.57 (req 1).
    # Batch 2 (req 3 alone, at once at 10): 10.1 + 1.1 -> 11.2, lookup + 0.5 + 0.04 -> 11.74
    # (req 3); the backbone went on meanwhile (+ 0.025 + 1.1 -> 12.325) and learns at exit 1
    # that nobody is left: the batch ends there. (keep: 3.96, 7.69, 5.855, 11.74.)
    assert rec.finish * 1000 == pytest.approx([3.96, 6.57, 5.295, 11.74], abs=1e-9)
    assert rec.batch_finish * 1000 == pytest.approx([6.57, 12.325], abs=1e-9)
    assert rec.batch_sizes.tolist() == [[3, 3, 3], [1, 1, 0]]


@pytest.mark.parametrize("engine", ENGINES)
def test_async_backbone_waits_for_a_slow_lookup_and_counts_it_as_check(engine):
    from offramp.core.modes import StageKind as K
    from offramp.sim.metrics import request_parts_ms

    slow = affine_profile(3, range(1, 5), head=(3.0, 0.0), last_head=(0.5, 0.0),
                          check=(0.03, 0.01), handoff=(0.02, 0.005))
    rec = run("async", profile=slow, engine=engine)
    # Early heads take 3 ms. Batch 1: 3.4; lookup 0: + 3.0 + 0.06 -> 6.46 (req 0). Backbone:
    # 3.435 + 1.3 -> 4.735, waits for lookup 0 until 6.46 (1.725 ms); lookup 1: + 3.06 -> 9.52
    # (req 2). Backbone: 6.495 + 1.3 -> 7.795, waits until 9.52 (1.725), last head -> 10.02.
    assert rec.finish[:3] * 1000 == pytest.approx([6.46, 10.02, 9.52], abs=1e-9)
    parts = request_parts_ms(rec)
    # By kind: req 1 waited 2 x 1.725 (check) and ran one head; req 2's lookup began after one
    # wait; each request's parts add up to its time in service.
    assert parts[K.CHECK][:3] == pytest.approx([0.06, 3.45, 1.785], abs=1e-9)
    assert parts[K.HEAD][:3] == pytest.approx([3.0, 0.5, 3.0], abs=1e-9)
    assert parts[K.HANDOFF][:3] == pytest.approx([0.0, 0.07, 0.035], abs=1e-9)
    total = sum(parts[k] for k in K)
    assert total[:3] == pytest.approx((rec.finish[:3] - rec.dispatch[:3]) * 1000, abs=1e-9)
