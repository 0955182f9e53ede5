"""The latency model at, between and beyond measured sizes and engine sizes; its sampled spread."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from offramp.common.errors import InputError
from offramp.core.modes import CostModel, ExitMode, StageKind
from offramp.profiling.format import LatencyProfile
from offramp.profiling.latency import Z99, LatencyModel
from offramp.profiling.synthetic import synthetic_profile
from offramp.sim.service import NoiseStream, ServiceTimes


def profile(points: dict[int, tuple[float, float]], overhead: bool = False) -> LatencyProfile:
    """One exit; segment 0 measured at the given {batch: (p50, p99)}; head 0 = 0.5 ms flat."""
    rows = []
    for b, (p50, p99) in points.items():
        rows.append({"kind": "segment", "k": 0, "batch": b, "p50_ms": p50, "mean_ms": p50,
                     "p99_ms": p99, "std_ms": 0.0, "runs": 10})
        rows.append({"kind": "head", "k": 0, "batch": b, "p50_ms": 0.5, "mean_ms": 0.5,
                     "p99_ms": 0.5, "std_ms": 0.0, "runs": 10})
        if overhead:
            rows.append({"kind": "overhead", "k": 0, "batch": b, "p50_ms": 0.1, "mean_ms": 0.1,
                         "p99_ms": 0.1, "std_ms": 0.0, "runs": 10})
    meta = {"model_id": "m", "n_exits": 1, "device": "none", "backend": "synthetic",
            "precision": "n/a", "input_shape": [], "software": {}, "date": "n/a",
            "produced_by": {"command": "tests"}, "synthetic": True}
    return LatencyProfile(rows=rows, meta=meta, source="prof.json")


PROF = profile({2: (1.0, 2.0), 4: (3.0, 3.0), 8: (7.0, 14.0)})


def test_exact_at_measured_sizes_and_linear_between():
    m = LatencyModel(PROF)
    assert m.lookup("segment", 0, 2) == (1.0, pytest.approx(math.log(2) / Z99))
    assert m.lookup("segment", 0, 4) == (3.0, 0.0)  # p99 = p50: no spread
    assert m.lookup("segment", 0, 8)[0] == 7.0
    # Between 4 and 8: p50 3 -> 7 and p99 3 -> 14, linearly in b.
    p50, sigma = m.lookup("segment", 0, 6)
    assert p50 == pytest.approx(5.0)
    assert sigma == pytest.approx(math.log(8.5 / 5.0) / Z99)
    assert m.lookup("segment", 0, 3)[0] == pytest.approx(2.0)
    assert m.lookup("segment", 0, 0) == (0.0, 0.0)


def test_never_extrapolates_beyond_the_measured_sizes():
    m = LatencyModel(PROF)
    for b in (1, 9):
        with pytest.raises(InputError, match=f"sizes 2..8, and a batch of {b} was asked for"):
            m.lookup("segment", 0, b)
    with pytest.raises(InputError, match="no compact rows for exit 0"):
        m.lookup("compact", 0, 4)
    # No overhead rows means no overhead, not an error.
    assert m.lookup("overhead", 0, 4) == (0.0, 0.0)
    assert LatencyModel(profile({2: (1.0, 1.0)}, overhead=True)).lookup("overhead", 0, 2) == (0.1, 0.0)


def test_bucketed_engines_round_up_and_hit_exact_sizes():
    m = LatencyModel(PROF, engine_sizes=[4, 8, 2, 4])
    assert m.engine_sizes == [2, 4, 8]
    assert m.lookup("segment", 0, 2)[0] == 1.0    # an engine size itself
    assert m.lookup("segment", 0, 4)[0] == 3.0    # an engine size itself
    assert m.lookup("segment", 0, 3)[0] == 3.0    # runs on the 4-engine
    assert m.lookup("segment", 0, 5)[0] == 7.0    # runs on the 8-engine
    assert m.lookup("segment", 0, 1)[0] == 1.0    # runs on the 2-engine (padded)
    with pytest.raises(InputError, match="larger than the largest engine size 8"):
        LatencyModel(PROF, engine_sizes=[2, 8]).lookup("segment", 0, 9)
    p50, sigma = m.table("segment", 0, 5)
    assert p50.tolist() == [0.0, 1.0, 1.0, 3.0, 3.0, 7.0]
    assert sigma[4] == 0.0 and sigma[5] == pytest.approx(math.log(2) / Z99)


def test_sampled_stage_times_have_the_profiles_p50_and_p99():
    # Segment at b = 8: p50 7 ms, p99 14 ms. Draw 200k batches through the simulator's tables.
    model = LatencyModel(profile({1: (1.0, 1.0), 8: (7.0, 14.0)}))
    svc = ServiceTimes.from_latency(model, n_exits=1, max_batch=8, mode=ExitMode.KEEP, sampled=True)
    noise = NoiseStream(np.random.default_rng(5), svc.width, svc.dist)
    seg0 = svc.slot(StageKind.SEGMENT, 0)
    ms = np.array([svc.duration(seg0, 8, noise.row(i)) for i in range(200_000)]) * 1000
    assert np.percentile(ms, 50) == pytest.approx(7.0, rel=0.01)
    assert np.percentile(ms, 99) == pytest.approx(14.0, rel=0.02)
    # p50 mode: every draw is the p50 exactly.
    fixed = ServiceTimes.from_latency(model, n_exits=1, max_batch=8, mode=ExitMode.KEEP, sampled=False)
    zero = NoiseStream(np.random.default_rng(5), fixed.width, fixed.dist)
    assert fixed.duration(fixed.slot(StageKind.SEGMENT, 0), 8, zero.row(3)) == pytest.approx(7e-3)
    assert fixed.duration(fixed.slot(StageKind.HEAD, 0), 6, zero.row(0)) == pytest.approx(0.5e-3)


def test_correlated_noise_keeps_each_stage_and_hangs_together():
    from offramp.sim.service import NoiseCorrelation

    corr = NoiseCorrelation(within=0.6, across=0.9)
    noise = NoiseStream(np.random.default_rng(7), 4, "lognormal", corr)
    z = np.array([noise.row(m) for m in range(60_000)])
    # Every z stays N(0, 1): each stage keeps the profile's p50 and p99.
    assert np.allclose(z.mean(axis=0), 0, atol=0.05)
    assert np.allclose(z.std(axis=0), 1, atol=0.05)
    # Within a batch: correlation rho; from one batch to the next: rho * phi (the shared part).
    c = np.corrcoef(z.T)
    assert np.allclose(c[~np.eye(4, dtype=bool)], 0.6, atol=0.03)
    lag1 = np.corrcoef(z[:-1, 0], z[1:, 1])[0, 1]
    assert lag1 == pytest.approx(0.6 * 0.9, abs=0.03)
    # Without a correlation the stream draws exactly what it always drew.
    plain = NoiseStream(np.random.default_rng(7), 4, "lognormal")
    again = NoiseStream(np.random.default_rng(7), 4, "lognormal", NoiseCorrelation())
    assert plain.row(5) == again.row(5)


def test_batch_tail_keeps_the_replica_busy_but_delays_no_finish():
    from helpers import scenario

    from offramp.policies import make_policy, policy_config
    from offramp.sim.config import RunConfig, ServerConfig, WorkloadConfig
    from offramp.sim.runner import simulate
    from offramp.traces.synthetic import synthetic_trace

    trace = synthetic_trace(400, seed=1)
    loop = synthetic_profile(batches=(1, 2, 4, 8), loop_stages=True)
    no_wake = {k: v for k, v in loop.meta.items() if k != "wake_ms"}
    results = {}
    for name, meta in (("tail", no_wake), ("none", {k: v for k, v in no_wake.items()
                                                    if k != "batch_tail_ms"})):
        prof = dataclasses.replace(loop, meta=meta)
        svc = ServiceTimes.from_latency(LatencyModel(prof, costs=CostModel.IN_LOOP), n_exits=4, max_batch=8,
                                        mode=ExitMode.SHRINK, sampled=False)
        sc = scenario(trace, make_policy(policy_config(name="none")).fit(trace), svc,
                      ServerConfig(max_batch=8, max_wait_ms=0.0, exit_mode="none"),
                      WorkloadConfig(rate_rps=20.0))
        for engine in ("fast", "reference"):
            res = simulate(sc, RunConfig(requests=50, replications=1, engine=engine))
            results[name, engine] = res.records[0]
    for engine in ("fast", "reference"):
        tail, none = results["tail", engine], results["none", engine]
        # At 20 req/s nearly every request finds the server idle: the same service, and each
        # batch ends its tail (0.05 ms at a batch of one, 0.15 at eight) after its last stage.
        assert np.allclose(tail.finish - tail.dispatch, none.finish - none.dispatch)
        sizes = tail.batch_sizes[:, 0]
        busy = (tail.batch_finish - tail.batch_dispatch) - (none.batch_finish - none.batch_dispatch)
        assert np.allclose(busy, (0.05 + 0.1 * (sizes - 1) / 7) / 1000.0)
        assert (sizes == 1).mean() > 0.8
    assert np.array_equal(results["tail", "fast"].batch_finish,
                          results["tail", "reference"].batch_finish)


def test_full_batch_time_with_and_without_the_loops_stages():
    from helpers import affine_profile

    from offramp.core.execution import no_exit

    # overhead 0.1 + 3 segments at b=4 (1.4 each) + last head 0.5 = 4.8 ms.
    plain = ServiceTimes.from_latency(LatencyModel(affine_profile(3, range(1, 5))), n_exits=3,
                                      max_batch=4, mode=ExitMode.KEEP, sampled=False)
    assert plain.plan_s(no_exit(4, 3)) == pytest.approx(4.8e-3)
    # With handoffs of 0.02 + 0.005·4 = 0.04 ms at each of the 2 boundaries: 4.88 ms.
    loop = affine_profile(3, range(1, 5), check=(0.03, 0.01), handoff=(0.02, 0.005))
    svc = ServiceTimes.from_latency(LatencyModel(loop), n_exits=3, max_batch=4,
                                    mode=ExitMode.KEEP, sampled=False)
    assert svc.plan_s(no_exit(4, 3)) == pytest.approx(4.88e-3)


def test_in_loop_adds_the_measured_residual_to_segments_and_heads_only():
    from helpers import affine_profile

    prof = affine_profile(2, range(1, 5))
    prof.meta["in_loop_residual_ms"] = {"segment 0": {"median_ms": 0.25},
                                        "head 1": {"median_ms": 0.1},
                                        "segment 1": {"median_ms": -0.5}}
    alone, loop = LatencyModel(prof), LatencyModel(prof, costs=CostModel.IN_LOOP)
    assert loop.lookup("segment", 0, 3)[0] == pytest.approx(alone.lookup("segment", 0, 3)[0] + 0.25)
    assert loop.lookup("head", 1, 2)[0] == pytest.approx(alone.lookup("head", 1, 2)[0] + 0.1)
    # A negative residual (faster in the loop: noise) is not subtracted; others are unchanged.
    assert loop.lookup("segment", 1, 2) == alone.lookup("segment", 1, 2)
    assert loop.lookup("compact", 0, 2) == alone.lookup("compact", 0, 2)
    assert loop.lookup("segment", 0, 0) == (0.0, 0.0)


def test_in_loop_prefers_the_served_p50_table():
    from helpers import affine_profile

    prof = affine_profile(2, range(1, 5))
    prof.meta["in_loop_residual_ms"] = {"segment 0": {"median_ms": 0.25,
                                                      "served_p50_ms": [[1, 2.0], [3, 3.0]]}}
    loop, alone = LatencyModel(prof, costs=CostModel.IN_LOOP), LatencyModel(prof)
    assert loop.lookup("segment", 0, 2)[0] == pytest.approx(2.5)  # interpolated in the table
    assert loop.lookup("segment", 0, 3)[0] == pytest.approx(3.0)
    # Outside the table's sizes: isolated + the median residual.
    assert loop.lookup("segment", 0, 4)[0] == pytest.approx(alone.lookup("segment", 0, 4)[0] + 0.25)


def test_an_implausible_spread_gets_a_robust_tail():
    """A stage timed with p99 100x its p50 (interference while profiling) samples a lognormal
    whose p99 is at most 20x its p50; spreads below that are kept as measured."""
    from offramp.profiling.latency import MAX_TAIL_RATIO

    prof = synthetic_profile()
    rows = [dict(r, p99_ms=100 * r["p50_ms"]) if (r["kind"], r["k"]) == ("head", 0) else
            dict(r, p99_ms=5 * r["p50_ms"]) if (r["kind"], r["k"]) == ("head", 1) else r
            for r in prof.rows]
    model = LatencyModel(LatencyProfile(rows=rows, meta=prof.meta))
    _, wide = model.lookup(StageKind.HEAD, 0, 4)
    _, kept = model.lookup(StageKind.HEAD, 1, 4)
    assert math.exp(wide * Z99) == pytest.approx(MAX_TAIL_RATIO) and MAX_TAIL_RATIO == 20.0
    assert math.exp(kept * Z99) == pytest.approx(5.0)
