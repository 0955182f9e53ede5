"""``exit_mode: rebatch`` (sim/rebatch.py): hand-traced schedules for each discipline, its
equivalences with ``none`` and ``shrink``, and conservation over random configurations.

Hand-traced profile (as tests/test_hand_traced.py): overhead 0.1 ms; segment k at batch b
1 + 0.1·b ms; head 0.5 ms; gather (compaction) of s samples 0.2 + 0.05·s ms; three exits.
max_batch 2, max_wait 0.5 ms, stage_max_wait 0.2 ms, one replica. Requests arrive at 0, 0,
0.3, 0.3, 2.0 and 2.1 ms; by the oracle r1 and r4 exit at exit 0, the others at exit 2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import affine_profile, crafted_trace, fixed_run, scenario
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engines import LOOP_PROFILE, POLICIES, PROFILE, SERVED_PROFILE
from test_engines import TRACE as T

from offramp.core.modes import ExitMode
from offramp.policies import make_policy
from offramp.policies.baselines import NoExit, Oracle
from offramp.policies.table import ExitTable, trace_fingerprint
from offramp.profiling.latency import LatencyModel, stage_costs
from offramp.sim.config import RunConfig, ServerConfig, WorkloadConfig
from offramp.sim.runner import run_replication
from offramp.sim.scenario import draw_replication
from offramp.sim.service import ServiceTimes

LATE, EARLY = [False, False, True], [True, True, True]
TRACE = crafted_trace([LATE, EARLY, LATE, LATE, EARLY, LATE])
ARRIVALS = [0.0, 0.0, 0.3, 0.3, 2.0, 2.1]


def run(mode="rebatch", policy=None, arrivals=ARRIVALS, trace=TRACE, max_batch=2,
        max_wait=0.5, engine="reference", server_from_dict=False, tail_ms=None, **rebatch):
    fields = dict(max_batch=max_batch, max_wait_ms=max_wait, exit_mode=mode, **rebatch)
    server = ServerConfig.model_validate(fields) if server_from_dict else ServerConfig(**fields)
    svc = ServiceTimes.from_latency(LatencyModel(affine_profile(3, range(1, max_batch + 1))),
                                    n_exits=3, max_batch=max_batch, mode=ExitMode(mode),
                                    sampled=False)
    if tail_ms is not None:  # the loop's own time after each batch's last stage
        svc.tail = [tail_ms / 1000.0] * (max_batch + 1)
    policy = (policy or Oracle()).fit(trace)
    sc, rep = fixed_run(trace, policy, svc, server, arrivals, list(range(len(arrivals))))
    rec, used = run_replication(sc, rep, engine)
    return rec, used


def test_deepest_first_by_hand():
    rec, used = run(discipline="deepest_first", stage_max_wait_ms=0.2)
    assert used == "reference"  # auto: the fast engine does not run rebatch
    # 0: stage 0 on [r0 r1]: 0.1 + 1.2 + 0.5 -> 1.8, r1 leaves, r0 waits at stage 1.
    # 1.8: r0 alone has not waited 0.2 ms and the entry is not empty: stage 0 on [r2 r3]
    #   -> 3.6; nobody leaves, both wait at stage 1 behind r0.
    # 3.6: stage 1 (2 waiting) and stage 0 ([r4 r5]) ready: the deeper, stage 1 on [r0 r2]
    #   (two batches: gather 0.3) + 1.2 + 0.5 -> 5.6; both go on, intact.
    # 5.6: stage 2 ([r0 r2], full), stage 1 ([r3], waited), stage 0 ready: stage 2, handed on
    #   whole (no gather): 1.2 + 0.5 -> 7.3 (r0, r2 finish).
    # 7.3: stage 1 [r3]: gather 0.25 + 1.1 + 0.5 -> 9.15; r3 waits at stage 2, the entry not
    #   empty: stage 0 [r4 r5] -> 10.95 (r4 leaves). 10.95: stage 2 [r3] has waited: handed on,
    #   1.1 + 0.5 -> 12.55. Then r5: stage 1 (gather 0.25) -> 14.4, stage 2 -> 16.0.
    assert rec.finish * 1000 == pytest.approx([7.3, 1.8, 7.3, 12.55, 10.95, 16.0], abs=1e-9)
    assert rec.dispatch * 1000 == pytest.approx([0, 0, 1.8, 1.8, 9.15, 9.15], abs=1e-9)
    assert rec.exit.tolist() == [2, 0, 2, 2, 0, 2]
    # One row per stage batch: segment sizes of each (stage 0 rows carry segment 0).
    assert rec.batch_sizes.tolist() == [[2, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 2], [0, 1, 0],
                                        [2, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]]
    # Waiting in front of stages after the first: r0 1.8 (stage 1); r3 3.6 -> 7.3 (stage 1)
    # and 9.15 -> 10.95 (stage 2); r5 10.95 -> 12.55 (stage 1); r2 never waits.
    between = rec.extra["between_s"] * 1000
    assert between == pytest.approx([1.8, 0, 0, 5.5, 0, 1.6], abs=1e-9)
    np.testing.assert_allclose(rec.parts.sum(axis=1) + rec.extra["between_s"],
                               rec.finish - rec.dispatch, atol=1e-12)


def test_fullest_first_by_hand():
    rec, _ = run(discipline="fullest_first", stage_max_wait_ms=0.2)
    # As deepest-first until 7.3; then stage 0 (2 waiting) beats stage 1 ([r3]): [r4 r5]
    # -> 9.1 (r4 leaves); stage 1 [r3 r5] (gather 0.3) + 1.2 + 0.5 -> 11.1; stage 2 whole
    # -> 12.8 (r3, r5).
    assert rec.finish * 1000 == pytest.approx([7.3, 1.8, 7.3, 12.8, 9.1, 12.8], abs=1e-9)


def test_oldest_first_by_hand():
    rec, _ = run(discipline="oldest_first", stage_max_wait_ms=0.2)
    # At 5.6 the entry's r4 (waiting since 2.0) is older than stage 1's r3 (3.6) and stage 2's
    # pair (5.6): [r4 r5] -> 7.4 (r4 leaves). 7.4: stage 1 [r3 r5] (since 3.6) before stage 2
    # (5.6): gather 0.3 + 1.7 -> 9.4. 9.4: stage 2 [r0 r2], whole -> 11.1; [r3 r5], whole ->
    # 12.8.
    assert rec.finish * 1000 == pytest.approx([11.1, 1.8, 11.1, 12.8, 7.4, 12.8], abs=1e-9)


@pytest.mark.parametrize("discipline", ["deepest_first", "oldest_first", "fullest_first"])
def test_rebatch_equals_none_when_nobody_exits_early(discipline):
    # No early exit consulted (their heads off, as PAME or Gati may place them): one stage,
    # the whole network, as in exit mode none, whatever the discipline.
    only_last = ExitTable(np.full(len(ARRIVALS), 2), trace_fingerprint(TRACE), "placed",
                          active=[False, False, True])
    none, _ = run("none", NoExit(), engine="reference")
    rebatch, _ = run("rebatch", only_last, discipline=discipline)
    for f in ("dispatch", "finish", "exit", "batch", "batch_sizes", "parts"):
        np.testing.assert_array_equal(getattr(rebatch, f), getattr(none, f), err_msg=f)


def test_rebatch_equals_shrink_when_each_batch_finishes_first():
    # deepest_first with no stage wait finishes each batch before the next starts, gathering
    # its survivors at the cost shrink pays to compact them: the same schedule.
    rng = np.random.default_rng(3)
    trace = crafted_trace(rng.random((60, 3)) < 0.5)
    arrivals = np.sort(rng.uniform(0, 40, 60)).tolist()
    shrink, _ = run("shrink", arrivals=arrivals, trace=trace, max_batch=4, engine="reference")
    rebatch, _ = run("rebatch", arrivals=arrivals, trace=trace, max_batch=4,
                     stage_max_wait_ms=0.0)
    for f in ("dispatch", "finish", "exit"):
        np.testing.assert_allclose(getattr(rebatch, f), getattr(shrink, f), rtol=0, atol=1e-12,
                                   err_msg=f)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy_i=st.integers(0, 5), replicas=st.integers(1, 3),
       routing=st.sampled_from(["round_robin", "random", "jsq"]), max_batch=st.integers(1, 24),
       wait=st.floats(0, 4), stage_wait=st.one_of(st.none(), st.floats(0, 4)),
       discipline=st.sampled_from(["deepest_first", "oldest_first", "fullest_first"]),
       load=st.floats(0.2, 1.3), sampled=st.booleans(), n=st.integers(1, 500),
       seed=st.integers(0, 2**32 - 1), loop=st.sampled_from([False, True, "served"]),
       pipe=st.one_of(st.none(), st.tuples(st.sets(st.integers(1, 3)),
                                           st.lists(st.integers(1, 3), min_size=4, max_size=4),
                                           st.sampled_from([0.0, 0.05, 0.5]))))
def test_rebatch_conserves(policy_i, replicas, routing, max_batch, wait, stage_wait, discipline,
                           load, sampled, n, seed, loop, pipe):
    # Every request once, in order in time, no sample in two batches of one stage, batches of
    # a replica one after another, and the time of each request adds up.
    model = (stage_costs(SERVED_PROFILE, "served") if loop == "served"
             else stage_costs(LOOP_PROFILE, "in_loop") if loop else LatencyModel(PROFILE))
    svc = ServiceTimes.from_latency(model, n_exits=4, max_batch=max_batch,
                                    mode=ExitMode.REBATCH, sampled=sampled)
    fields = dict(max_batch=max_batch, max_wait_ms=wait, exit_mode="rebatch",
                  discipline=discipline, stage_max_wait_ms=stage_wait)
    if pipe is None:
        fields.update(replicas=replicas, routing=routing)
    else:  # a pipeline: the 4 segments cut before each of ``cuts``, GPUs per group
        cuts, gpus, move = pipe
        bounds = [0, *sorted(cuts), 4]
        groups = [list(range(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
        fields.update(pipeline=[{"segments": g, "replicas": gpus[i]}
                                for i, g in enumerate(groups)], transfer_ms_per_sample=move)
    server = ServerConfig.model_validate(fields)
    replicas = server.replicas
    rate = load * replicas * max_batch / (4 * (1.0 + 0.02 * max_batch) + 0.3) * 1000
    sc = scenario(T, make_policy(POLICIES[policy_i]).fit(T), svc, server,
                  WorkloadConfig(rate_rps=rate))
    rec, used = run_replication(sc, draw_replication(sc, RunConfig(requests=n),
                                                     np.random.SeedSequence(seed)), "auto")
    assert used == "reference" and rec.arrival.size == n
    assert (rec.arrival <= rec.dispatch).all() and (rec.dispatch < rec.finish).all()
    assert np.array_equal(rec.dispatch, rec.batch_dispatch[rec.batch])
    # Stage 0 batches hold every request once; segment k ran once for each request that
    # reached it (exit >= k): survivors are never in two batches, never left behind.
    assert np.array_equal(np.bincount(rec.batch, minlength=len(rec.batch_dispatch)),
                          rec.batch_sizes[:, 0])
    for k in range(4):
        assert rec.batch_sizes[:, k].sum() == (rec.exit >= k).sum()
    assert (rec.batch_sizes <= max_batch).all()
    for r in range(replicas):
        mine = rec.batch_replica == r
        assert (rec.batch_dispatch[mine][1:] >= rec.batch_finish[mine][:-1] - 1e-15).all()
    if pipe is not None:  # each segment runs on its group's GPUs only
        group_of_gpu = np.repeat(np.arange(len(groups)), gpus[:len(groups)])
        for g, segs in enumerate(groups):
            for k in segs:
                assert (group_of_gpu[rec.batch_replica[rec.batch_sizes[:, k] > 0]] == g).all()
    between = rec.extra["between_s"]
    assert (rec.parts >= 0).all() and (between >= 0).all()
    np.testing.assert_allclose(rec.parts.sum(axis=1) + between, rec.finish - rec.dispatch,
                               rtol=0, atol=1e-12)


def test_rebatch_fields_are_checked():
    with pytest.raises(ValueError, match="only for exit_mode rebatch"):
        ServerConfig(exit_mode="shrink", discipline="oldest_first")
    with pytest.raises(ValueError, match="not a shared queue"):
        ServerConfig(exit_mode="rebatch", replicas=2, routing="shared")
    with pytest.raises(ValueError, match="deepest_first"):
        ServerConfig(exit_mode="rebatch", discipline="newest_first")
    assert ServerConfig(exit_mode="rebatch", max_wait_ms=3).stage_wait_s == 0.003


def test_simulate_and_validate_as_a_user_runs_them(tmp_path, capsys):
    import pandas as pd
    import yaml

    from offramp.analysis.cli import main

    study = yaml.safe_load(open("examples/fmnist-entropy-shrink.yaml"))
    study["server"].update(exit_mode="rebatch", discipline="fullest_first",
                           stage_max_wait_ms=0.5)
    study["run"].update(requests=3000, replications=2)
    path = tmp_path / "rebatch.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["simulate", str(path), "-o", str(tmp_path / "out"), "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "reference engine" in out and "between" in out
    frame = pd.read_parquet(tmp_path / "out" / "requests.parquet")
    parts = [c for c in frame if c.endswith("_ms") and c not in ("latency_ms", "queue_ms",
                                                                  "service_ms")]
    assert "between_stages_ms" in parts and (frame["between_stages_ms"] > 0).any()
    np.testing.assert_allclose(frame[parts].sum(axis=1), frame["service_ms"], atol=1e-9)
    # validate serves rebatch on the real loop: tests/test_validate.py


def test_capacity_compares_rebatch_with_shrink(tmp_path, capsys):
    # The README's comparison, short: without a stage wait deepest-first is shrink's schedule
    # (here on p50 stage times with no per-pass factors: isolated costs), so the same capacity.
    from offramp.analysis.cli import main

    args = ["capacity", "examples/capacity-fmnist.yaml", "--slo-p99-ms", "25", "--tol", "0.05",
            "--set", "run.requests=2000", "--set", "run.replications=1",
            "--set", "profile.latency=p50", "--set", "profile.costs=isolated",
            "--compare", "server.exit_mode=shrink",
            "--compare", "server.exit_mode=rebatch,server.stage_max_wait_ms=0",
            "--compare", "server.exit_mode=rebatch,server.discipline=fullest_first",
            "-o", str(tmp_path / "cap")]
    assert main(args) == 0
    variants = json.loads((tmp_path / "cap" / "capacity.json").read_text())["variants"]
    shrink, rebatch, fullest = (variants[k] for k in (
        "server.exit_mode=shrink", "server.exit_mode=rebatch,server.stage_max_wait_ms=0",
        "server.exit_mode=rebatch,server.discipline=fullest_first"))
    assert rebatch["capacity_rps"] == shrink["capacity_rps"]
    assert [p["value"] for p in rebatch["probes"]] == [p["value"] for p in shrink["probes"]]
    assert 0 < fullest["capacity_rps"] != shrink["capacity_rps"]
    assert "rebatch" in capsys.readouterr().out


def test_a_two_group_pipeline_is_a_tandem_of_mm1_queues():
    # Jackson: no exits, batches of one, exponential service in each group (segment 0 on GPU 0
    # with mean 1 ms, segment 1 on GPU 1 with mean 1.5 ms), Poisson arrivals at 400/s: the
    # mean sojourn is 1/(1000 - 400) + 1/(666.7 - 400) s = 5.417 ms.
    trace = crafted_trace([[False, True]] * 50)
    base = np.zeros((6, 2))
    base[1, 1], base[2, 1] = 1e-3, 1.5e-3  # slots: overhead, segment 0, segment 1, heads, ...
    svc = ServiceTimes(base, np.ones_like(base), "exponential", 2)
    server = ServerConfig.model_validate({"max_batch": 1, "max_wait_ms": 0, "exit_mode":
                                          "rebatch", "pipeline": [{"segments": [0]},
                                                                  {"segments": [1]}]})
    sc = scenario(trace, NoExit().fit(trace), svc, server, WorkloadConfig(rate_rps=400))
    rec, used = run_replication(sc, draw_replication(sc, RunConfig(requests=150_000),
                                                     np.random.SeedSequence(1)), "auto")
    assert used == "reference" and rec.batch_replica.max() == 1
    sojourn = (rec.finish - rec.arrival)[15_000:].mean() * 1000
    assert sojourn == pytest.approx(1 / 0.6 + 1 / (2 / 3 - 0.4), rel=0.02)
    # Each GPU runs its own segment only.
    assert set(rec.batch_replica[rec.batch_sizes[:, 1] > 0]) == {1}
    assert set(rec.batch_replica[rec.batch_sizes[:, 0] > 0]) == {0}


def test_a_pipeline_by_hand():
    # Group 0 (segment 0 and exit 0) on GPU 0, group 1 (segments 1, 2) on GPU 1; moving a
    # sample between them takes 0.4 ms. Requests r0 (exit 2) and r1 (exit 0) at 0 go as one
    # batch (max_batch 2): 0.1 + 1.2 + 0.5 -> 1.8, r1 leaves; r0 reaches GPU 1 at 2.2: gather
    # 0.25 + segment 1 1.1 + head 0.5 -> 4.05 (it goes on), handed on whole: + 1.1 + 0.5 -> 5.65.
    rec, _ = run(pipeline=[{"segments": [0]}, {"segments": [1, 2]}],
                 transfer_ms_per_sample=0.4, arrivals=[0.0, 0.0], max_wait=0.0,
                 trace=crafted_trace([LATE, EARLY]), server_from_dict=True)
    assert rec.finish * 1000 == pytest.approx([5.65, 1.8], abs=1e-9)
    assert rec.extra["between_s"] * 1000 == pytest.approx([0.4, 0.0], abs=1e-9)
    assert rec.batch_replica.tolist() == [0, 1, 1]


def test_the_pipeline_split_gives_gpus_in_proportion_to_work():
    from offramp.sim.pipeline import choose_split

    # Half the requests leave after segment 0, a quarter after 1, ...: segment 0 carries
    # 1 ms per request, segments 1-3 together 0.85: one GPU each at 2, two each at 4.
    two = choose_split([1, 0.5, 0.25, 0.1], [1, 1, 1, 1], 2)
    assert (two.groups, two.replicas, two.bound_rps) == (((0,), (1, 2, 3)), (1, 1), 1000.0)
    four = choose_split([1, 0.5, 0.25, 0.1], [1, 1, 1, 1], 4)
    assert (four.groups, four.replicas, four.bound_rps) == (((0,), (1, 2, 3)), (2, 2), 2000.0)
    # Nobody exits, segment 1 three times segment 0's cost: three GPUs for it.
    split = choose_split([1, 1], [1, 3], 4)
    assert (split.replicas, split.bound_rps) == ((1, 3), 1000.0)
    assert split.config() == [{"segments": [0], "replicas": 1}, {"segments": [1], "replicas": 3}]
    with pytest.raises(ValueError, match="2 GPUs or more"):
        choose_split([1, 1], [1, 1], 1)


def test_offramp_pipeline_prints_a_split_that_simulate_serves(tmp_path, capsys):
    from offramp.analysis.cli import main

    assert main(["pipeline", "examples/capacity-fmnist.yaml", "--gpus", "2,4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["gpus"] for r in rows] == [2, 4]
    assert all(sum(r["replicas"]) == r["gpus"] for r in rows)
    assert [k for r in rows for k in sum(r["groups"], [])] == [0, 1, 2, 3] * 2
    # What it prints is what simulate takes.
    assert main(["simulate", "examples/capacity-fmnist.yaml", "--set", "server.exit_mode=rebatch",
                 "--set", rows[1]["set"], "--set", "run.requests=2000", "--set",
                 "run.replications=1", "-o", str(tmp_path / "out")]) == 0
    frame = __import__("pandas").read_parquet(tmp_path / "out" / "requests.parquet")
    assert len(frame) == 2000
    assert main(["pipeline", "examples/capacity-fmnist.yaml", "--gpus", "1"]) == 2
    assert "GPU counts >= 2" in capsys.readouterr().err


def test_the_demo_takes_rebatch(tmp_path, capsys):
    from offramp.analysis.cli import main

    assert main(["demo", "--modes", "shrink,rebatch", "--requests", "2000", "--replications",
                 "1", "-o", str(tmp_path / "demo"), "--json"]) == 0
    for model in json.loads(capsys.readouterr().out).values():
        rows = {(r["policy"], r["exit_mode"]): r for r in model["policies"]}
        rebatch, shrink = rows[("entropy", "rebatch")], rows[("entropy", "shrink")]
        assert rebatch["engine"] == "reference" and rebatch["between_stages_mean_ms"] > 0
        assert ("entropy", "keep") not in rows
        # Both modes see the same requests: the same exits, so the same accuracy.
        assert rebatch["accuracy"] == shrink["accuracy"]


PIPE = [{"segments": [0]}, {"segments": [1, 2]}]


def test_a_pipeline_group_takes_survivors_while_the_sender_finishes_its_tail():
    # GPU 0 stays busy 5 ms after its stage (its tail); GPU 1 takes r0 at once (1.7 ms; r0 is
    # its batch whole: handed on, no gather), then has its own tail before r0's last stage:
    # 1.7 + 1.1 + 0.5 + 5 -> 8.3, + 1.1 + 0.5 -> 9.9.
    rec, _ = run(arrivals=[0.0], trace=crafted_trace([LATE]), max_wait=0.0, tail_ms=5.0,
                 pipeline=PIPE, server_from_dict=True)
    assert rec.batch_dispatch * 1000 == pytest.approx([0.0, 1.7, 8.3], abs=1e-9)
    assert rec.finish * 1000 == pytest.approx([9.9], abs=1e-9)


def test_a_later_group_waits_while_requests_wait_at_the_first():
    # r1 waits at GPU 0's entry while r0 waits in front of stage 1 on GPU 1: r1 could join it,
    # so stage 1 is not ready by "nothing upstream"; both go on together, as on one replica.
    trace, arrivals = crafted_trace([LATE] * 3), [0.0, 2.0, 50.0]
    pipe, _ = run(arrivals=arrivals, trace=trace, stage_max_wait_ms=100.0, pipeline=PIPE,
                  server_from_dict=True)
    one, _ = run(arrivals=arrivals, trace=trace, stage_max_wait_ms=100.0)
    assert pipe.batch_sizes.tolist() == one.batch_sizes.tolist()
    np.testing.assert_allclose(pipe.batch_dispatch, one.batch_dispatch, atol=1e-12)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # its levels' accuracy on no val split
def test_a_stateful_policy_switches_on_every_group():
    # Dynamic-OFA: a 0.001 ms target makes it step down to its first level (static exit 1)
    # after the first request; every group's GPU must follow, as one replica does.
    from offramp.policies.baselines import StaticExit
    from offramp.policies.dynamic_ofa import DynamicOFA

    exits = []
    for extra in ({}, {"pipeline": PIPE}):
        ofa = DynamicOFA([StaticExit(1), NoExit()], 0.001, 0.99, window=1, warmup=0,
                         up_after=10**6)
        rec, _ = run(policy=ofa, arrivals=[5.0 * i for i in range(6)],
                     trace=crafted_trace([LATE] * 6), max_batch=1, max_wait=0.0,
                     server_from_dict=True, **extra)
        exits.append(rec.exit.tolist())
    assert exits[0] == exits[1] == [2, 1, 1, 1, 1, 1]


def test_a_pipeline_sets_replicas_and_keeps_it_unset():
    cfg = ServerConfig.model_validate({"exit_mode": "rebatch", "pipeline": [
        {"segments": [0, 1], "replicas": 3}, {"segments": [2, 3]}]})
    assert cfg.replicas == 4 and "replicas" not in cfg.model_fields_set
    again = ServerConfig.model_validate(cfg.model_dump(mode="json", exclude_unset=True))
    assert again == cfg
    with pytest.raises(ValueError, match="replicas: 2 but the pipeline's groups have 4"):
        ServerConfig.model_validate({**cfg.model_dump(mode="json", exclude_unset=True),
                                     "replicas": 2})
