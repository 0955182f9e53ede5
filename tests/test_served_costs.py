"""Stage costs fitted on served streams (profiling/served.py): the fit recovers a known state
model from synthetic streams (labelled synthetic: stage times drawn here, not measured), the
simulator applies the fitted factors by the replica's state, and a broken table is one clear
error."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from offramp.common.errors import InputError
from offramp.profiling.format import LatencyProfile, validate_profile
from offramp.profiling.latency import LatencyModel
from offramp.profiling.served import (
    IDLE_EDGES_MS,
    KIND_CODES,
    WARMTH_EDGES,
    _warm_term,
    fit_served_costs,
    loop_state,
    state_bins,
    warmth_after,
    warmth_at,
    warmth_centres,
)
from offramp.profiling.synthetic import synthetic_profile
from offramp.sim.service import ServiceTimes

TAU_S = 0.1
# The truth the synthetic streams are drawn from: factors by idle bin, and a warmth factor
# exp(BETA · (u - 1/2)) with u clipped to the outer bin centres.
IDLE_F = np.array([1.0, 0.95, 1.0, 1.05, 1.15, 1.3, 1.5])
BETA = -0.4
BASE = {("overhead", 0): 0.05, ("segment", 0): 1.0, ("head", 0): 0.1, ("segment", 1): 0.8,
        ("head", 1): 0.1}
SIGMA = 0.2


def _stream(mean_gap_ms: float, n_batches: int, rng: np.random.Generator,
            mode_factor: float = 1.0) -> dict[str, np.ndarray]:
    """A served stream as serve_stream writes it (synthetic stage times, one replica)."""
    disp, fin, sizes, sk, kk, ss, ms, sb = [], [], [], [], [], [], [], []
    t, u = 0.0, 0.0
    for i in range(n_batches):
        gap = rng.exponential(mean_gap_ms / 1000.0) if rng.random() < 0.7 else 0.0
        d = t + gap
        u = warmth_at(u, d - t, TAU_S)
        ib, _ = state_bins(1000.0 * (d - t), u)
        b = int(rng.integers(1, 5))
        busy = 0.0
        warm = math.exp(BETA * float(_warm_term(np.array(u))))
        for (kind, k), base in BASE.items():
            x = (base * (1 + 0.1 * (b - 1)) * IDLE_F[ib] * warm * mode_factor
                 * math.exp(SIGMA * rng.standard_normal()))
            sk.append(KIND_CODES.index(kind))
            kk.append(k)
            ss.append(b)
            ms.append(x)
            sb.append(i)
            busy += x / 1000.0
        busy += 0.00005  # the loop's own time around the stages
        disp.append(d)
        fin.append(d + busy)
        sizes.append([b, b])
        u = warmth_after(u, busy, TAU_S)
        t = d + busy
    return {"batch_dispatch": np.array(disp), "batch_finish": np.array(fin),
            "batch_sizes": np.array(sizes), "stage_kind": np.array(sk), "stage_k": np.array(kk),
            "stage_size": np.array(ss), "stage_ms": np.array(ms), "stage_batch": np.array(sb)}


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(11)
    runs = [_stream(gap, 6000, rng, f) for gap in (0.3, 2.0, 8.0, 30.0)
            for f in (1.0, 1.2)]
    modes = ["keep", "none"] * 4
    stages = [(kind, k, [1, 2, 3, 4, 8]) for kind, k in BASE]
    return fit_served_costs(runs, modes, lambda kind, k, b: 10.0, stages, ["synthetic"])


def test_the_fit_recovers_the_state_model(fitted):
    assert fitted["tau_ms"] == 100.0
    for kind in ("segment", "head"):
        f = fitted["factor"][kind]
        idle, n_i = np.array(f["idle"]), np.array(f["idle_n"])
        # Relative to the most common bin, as the table presents them.
        want_i = IDLE_F / IDLE_F[n_i.argmax()]
        ok_i = n_i >= 300
        assert ok_i.sum() >= 5 and (np.array(f["warmth_n"]) >= 300).sum() >= 4
        np.testing.assert_allclose(idle[ok_i], want_i[ok_i], rtol=0.04)
        assert f["warmth_slope"] == pytest.approx(BETA, abs=0.06)
        np.testing.assert_allclose(np.log(f["warmth"]), f["warmth_slope"] * (
            np.array(warmth_centres()) - 0.5), atol=1e-3)
        assert f["mode"]["none"] / f["mode"]["keep"] == pytest.approx(1.2, rel=0.03)
    # Each stage's sigma, and a base whose ratios across sizes follow the truth.
    for kind, k in BASE:
        rows = np.array(fitted["stages"][f"{kind} {k}"])
        assert rows[:4, 2] == pytest.approx(SIGMA, rel=0.15)
        np.testing.assert_allclose(rows[:4, 1] / rows[0, 1], 1 + 0.1 * np.arange(4), rtol=0.04)
        # Size 8 never ran: the profile's value scaled by the kind's served/profile ratio.
        assert rows[4, 3] == 0 and rows[4, 1] == pytest.approx(rows[:4, 1].mean() / 1.15, rel=0.2)
    assert fitted["noise_corr"]["within"] < 0.05  # drawn independently
    assert fitted["wander"]["sigma"] < 0.03  # no slow wander drawn
    assert fitted["batch_tail_ms"]["ms"] == pytest.approx([0.05] * 4, abs=1e-6)


def test_loop_state_follows_the_sim_rule():
    disp, fin = np.array([0.0, 0.01, 0.05]), np.array([0.004, 0.02, 0.051])
    idle, warm = loop_state(disp, fin, TAU_S)
    np.testing.assert_allclose(idle, [0.0, 6.0, 30.0])
    u1 = warmth_after(0.0, 0.004, TAU_S)
    assert warm[1] == pytest.approx(u1 * math.exp(-0.006 / TAU_S))
    assert 0 <= warm.min() and warm.max() < 1


def test_the_simulator_scales_stages_by_the_replica_state():
    prof = synthetic_profile(batches=(1, 2, 4, 8), loop_stages=True, served_costs=True)
    table = prof.meta["served_costs"]
    model = LatencyModel(prof, in_loop=True, mode="keep")
    svc = ServiceTimes.from_latency(model, 4, 8, False, False)
    assert svc.wake is None and svc.state is not None  # the state replaces the wake-up
    slot = svc.slot("segment", 1)
    for idle_s, u in ((0.0, 0.0), (0.003, 0.5), (0.05, 0.95)):
        got_u, fac = svc.state.at_dispatch(u / math.exp(-idle_s / 0.05), idle_s)
        assert got_u == pytest.approx(u)
        ib, _ = state_bins(1000 * idle_s, u)
        # Log-linear in u between the bin centres, flat beyond.
        logw = np.interp(u, warmth_centres(), np.log(table["factor"]["segment"]["warmth"]))
        want = table["factor"]["segment"]["idle"][ib] * math.exp(logw)
        assert fac[slot] == pytest.approx(want)
    # The mode factor sits in the p50 of the served mode only.
    none = LatencyModel(prof, in_loop=True, mode="none")
    assert none.lookup("segment", 1, 4)[0] == pytest.approx(1.1 * model.lookup("segment", 1, 4)[0])
    assert model.lookup("segment", 1, 4) == pytest.approx((1.0 + 0.02 * 4, 0.2))


@pytest.mark.parametrize("path, value, field", [
    (("tau_ms",), 0, "served_costs.tau_ms"),
    (("warmth_edges",), [0.5, 0.2], "served_costs.warmth_edges"),
    (("factor", "head", "idle"), [1.0, 2.0], "served_costs.factor.head"),
    (("factor", "segment", "mode"), {"none": -1}, "served_costs.factor.segment"),
    (("stages", "segment 0"), [[1, 0.0, 0.2, 5]], "served_costs.stages.segment 0"),
    (("noise_corr",), {"within": 1.5, "across": 0}, "served_costs.noise_corr"),
    (("wander",), {"sigma": 0.1, "tau_s": 0}, "served_costs.wander"),
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
    ib, ub = state_bins(np.array([0.0, 0.1, 9.99, 10.0, 1e6]), np.array([0.0, 0.2, 0.5, 0.95, 1.0]))
    assert ib.tolist() == [0, 1, 5, 6, 6] and ub.tolist() == [0, 1, 2, 5, 5]
    assert len(IDLE_EDGES_MS) == 6 and len(WARMTH_EDGES) == 5


def test_a_slow_wander_is_found_and_simulated():
    """Streams whose speed wanders slowly (an OU process, σ 0.1, τ 2 s): the fit finds σ and
    takes it out of each stage's own σ; the simulator's wander has that σ and time scale."""
    from offramp.sim.service import WanderStream

    rng = np.random.default_rng(5)
    runs = []
    for _ in range(6):
        run = _stream(2.0, 12000, rng)
        t = run["batch_dispatch"][run["stage_batch"]]
        ou = WanderStream(np.random.default_rng(int(rng.integers(1 << 30))), 0.1, 2.0)
        grid = np.arange(0, t.max() + 0.05, 0.05)
        speed = np.array([ou.factor(x) for x in grid])
        run["stage_ms"] = run["stage_ms"] * speed[np.searchsorted(grid, t)]
        runs.append(run)
    out = fit_served_costs(runs, ["keep"] * 6, lambda kind, k, b: 1.0,
                           [(kind, k, [1, 2, 3, 4]) for kind, k in BASE])
    assert out["wander"]["sigma"] == pytest.approx(0.1, rel=0.3)
    assert 0.7 < out["wander"]["tau_s"] < 6
    # The stages' own spread is what is left: sqrt(0.2² + 0.1² - σ_w²) ≈ 0.2.
    rows = np.array(out["stages"]["segment 0"])
    assert rows[:, 2] == pytest.approx(SIGMA, rel=0.2)
    w = WanderStream(np.random.default_rng(0), 0.1, 2.0)
    logs = np.log([w.factor(0.01 * i) for i in range(200_000)])
    assert logs.std() == pytest.approx(0.1, rel=0.1)
    lag = 200  # 2 s
    assert np.corrcoef(logs[:-lag], logs[lag:])[0, 1] == pytest.approx(math.exp(-1), abs=0.1)
