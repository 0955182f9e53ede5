"""Exact tests on hand-built inputs for the served-cost fit, the capacity search's rules, the
sweep's grid checks and the calibration points (each value worked out by hand or by an
independent formula here; synthetic inputs, tests only)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

from offramp.analysis.studies import capacity as C
from offramp.analysis.studies.sweep import check_sweep, load_grid
from offramp.analysis.validation.served import _calibration_keys
from offramp.common.errors import InputError
from offramp.core.modes import StageKind
from offramp.profiling import served as S

# --- the served-cost fit -------------------------------------------------------------------


def _ar1(phi: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


@pytest.mark.parametrize("phi", [0.6, 0.2])
def test_ar1_from_series_recovers_phi(phi):
    # 0.2: only lags 1 and 2 have an autocorrelation above 0.02 (0.04, 0.008): two lags fit.
    assert S.ar1_from_series(_ar1(phi, 200_000, 1)) == pytest.approx(phi, abs=0.03)


def test_ar1_from_series_is_zero_without_memory():
    assert S.ar1_from_series(np.random.default_rng(2).normal(size=5000)) == 0.0
    # A period of 6: autocorrelation 0.5 at lags 1 and 5, 1 at 6, 0.5 at 7: not decaying.
    assert S.ar1_from_series(np.sin(np.arange(5000) * 2 * np.pi / 6)) == 0.0
    assert S.ar1_from_series(_ar1(0.6, 49, 3)) == 0.0  # under 50 points


def test_noise_corr_within_is_the_pairwise_formula():
    rng = np.random.default_rng(4)
    n_b = 3000
    sizes = rng.integers(2, 6, n_b)
    batch = np.repeat(np.arange(n_b), sizes)
    z = rng.normal(size=batch.size) + np.repeat(rng.normal(size=n_b) * 0.8, sizes)
    kind = np.where(rng.random(batch.size) < 0.5, 1, 2)  # segments and heads only count
    got = S._noise_corr({"kind": kind, "batch": batch}, z)
    num = den = 0.0
    for j in range(n_b):
        v = z[batch == j]
        num += v.sum() ** 2 - (v ** 2).sum()  # sum over ordered pairs i != l of z_i z_l
        den += (v.size - 1) * (v ** 2).sum()
    assert got["within"] == pytest.approx(round(min(max(num / den, 0.0), 0.99), 4))
    assert 0.2 < got["within"] < 0.6  # a common batch effect of variance 0.64 vs 1
    assert got["across"] == 0.0  # independent batches


def _cells(kind: int, k: int, b: int, base_ms: float, factors: dict[int, tuple[float, int]]):
    """Stage times of one (kind, k, b): in each idle bin, ``count`` times base x factor."""
    rows = []
    mid = {0: 0.05, 3: 1.5, 5: 7.0}
    for bin_, (factor, count) in factors.items():
        rows += [(kind, k, b, base_ms * factor, mid[bin_])] * count
    return rows


def test_additive_fit_recovers_bases_and_idle_factors_exactly():
    seg, head = StageKind.SEGMENT.code, StageKind.HEAD.code
    rows = (_cells(seg, 0, 1, 2.0, {0: (1.0, 60), 3: (1.5, 40)})
            + _cells(seg, 0, 4, 3.0, {0: (1.0, 60), 3: (1.5, 40)})
            # heads: most often after a 1.5 ms idle, 1.2x faster right after a batch
            + _cells(head, 0, 1, 0.5, {0: (1 / 1.2, 35), 3: (1.0, 80)}))
    kind, k, b, ms, idle = (np.array(c) for c in zip(*rows, strict=True))
    t = {"kind": kind, "k": k, "b": b, "ms": ms, "idle": idle, "batch": np.arange(ms.size)}
    fit = S._fit_additive(t)
    base = {tuple(key): math.exp(v) for key, v in zip(fit["keys"].tolist(), fit["base"],
                                                       strict=True)}
    # Each kind's factors are relative to its most common idle bin, whose times are the base.
    assert base[(seg, 0, 1)] == pytest.approx(2.0)
    assert base[(seg, 0, 4)] == pytest.approx(3.0)
    assert base[(head, 0, 1)] == pytest.approx(0.5)
    assert math.exp(fit["c"][seg][3]) == pytest.approx(1.5)
    assert math.exp(fit["c"][head][0]) == pytest.approx(1 / 1.2)
    assert fit["c"][seg][0] == fit["c"][head][3] == 0.0
    assert np.allclose(fit["resid"], 0.0)
    # Six 10x outliers pull the least-squares start off; the medians after it are exact.
    rows += [(seg, 0, 4, 30.0, 0.05)] * 6
    kind, k, b, ms, idle = (np.array(c) for c in zip(*rows, strict=True))
    fit = S._fit_additive({"kind": kind, "k": k, "b": b, "ms": ms, "idle": idle,
                           "batch": np.arange(ms.size)})
    assert np.allclose(fit["resid"][:-6], 0.0)
    assert np.exp(fit["base"]) == pytest.approx([2.0, 3.0, 0.5])


def _run(n_batches: int, stages_per_batch: int = 2) -> dict[str, np.ndarray]:
    d = np.arange(n_batches) * 0.01
    sb = np.repeat(np.arange(n_batches), stages_per_batch)
    return {"batch_dispatch": d, "batch_finish": d + 0.004,
            "batch_sizes": np.tile([[4, 4]], (n_batches, 1)),
            "stage_batch": sb, "stage_kind": np.tile([StageKind.SEGMENT.code,
                                                      StageKind.HEAD.code], n_batches),
            "stage_k": np.zeros(sb.size, dtype=int), "stage_size": np.full(sb.size, 4),
            "stage_ms": np.tile([2.0, 1.0], n_batches)}


def test_fit_counts_batches_and_scales_unseen_stages_by_the_reference():
    runs = [_run(40), _run(25)]
    ref = {("segment", 0): 1.0, ("head", 0): 0.5, ("segment", 1): 0.7}
    out = S.fit_served_costs(runs, lambda kind, k, b: ref[(str(kind), k)] * b / 4,
                             [("segment", 0, [4, 8]), ("head", 0, [4]), ("segment", 1, [4])])
    assert out["batches"] == 65 and out["stage_times"] == 130
    # segment 0 ran at 4 only (2.0 ms vs reference 1.0): size 8 is the reference x that ratio.
    assert out["stages"]["segment 0"] == [[4, 2.0, 0.0, 65], [8, 4.0, 0.0, 0]]
    # segment 1 never ran: its kind's ratio does not carry over to another k; 1.0 x reference.
    assert out["stages"]["segment 1"][0][1] == pytest.approx(0.7)
    assert out["batch_tail_ms"] == {"batch": [4], "ms": [1.0]}  # 4 ms busy, 3 ms of stages
    assert out["median_abs_residual"] == 0.0


def test_a_stage_served_often_enough_gets_its_own_sigma_from_its_p99():
    run = _run(150)
    lift = np.exp(np.linspace(0.0, 0.3, 150))  # segment times spread over +0..35%
    run["stage_ms"][0::2] = 2.0 * lift
    run["batch_dispatch"] += 0.006  # one idle bin
    run["batch_finish"] += 0.006
    out = S.fit_served_costs([run], lambda kind, k, b: 1.0, [("segment", 0, [4]),
                                                            ("head", 0, [4])])
    r = np.log(lift) - np.median(np.log(lift))
    assert out["stages"]["segment 0"][0][2] == round((np.percentile(r, 99) - 0.0) / S.Z99, 4)
    assert out["stages"]["head 0"][0][2] == 0.0  # constant: no spread
    # Where no stage of its kind has a sigma, a stage's noise is left out of the correlation.
    assert out["noise_corr"] == {"within": 0.0, "across": 0.0}


def test_the_median_residual_is_reported_to_four_places():
    run = _run(40)
    run["stage_ms"][0::4] = 2.2  # segments alternate 2.0 / 2.2 ms, heads stay at 1.0
    run["batch_dispatch"] += 0.006  # every batch after the same 6 ms idle (one idle bin)
    run["batch_finish"] += 0.006
    out = S.fit_served_costs([run], lambda kind, k, b: 1.0, [("segment", 0, [4])])
    # Segment residuals are +-log(1.1)/2 around their median, the heads' 0: the median of
    # the 80 absolute residuals is half of log(1.1)/2.
    assert out["median_abs_residual"] == round(math.log(1.1) / 4, 4)
    assert out["stages"]["segment 0"][0][1] == pytest.approx(math.sqrt(2.0 * 2.2))


def test_group_median_takes_the_middle_pair_and_zero_for_empty_groups():
    ids = np.array([0, 0, 0, 0, 2, 2, 2, 3])
    values = np.array([4.0, 1.0, 3.0, 2.0, 9.0, 7.0, 8.0, 5.0])
    med, counts = S._group_median(ids, values, 5)
    assert med.tolist() == [2.5, 0.0, 8.0, 5.0, 0.0]
    assert counts.tolist() == [4, 0, 3, 1, 0]


def test_additive_fit_separates_batch_size_from_idle_time_when_they_go_together():
    # Size 1 mostly after long idles (bin 3, 1.5x), size 4 mostly right after a batch (bin 0):
    # medians alone stop at factor 1 with each size's base from its own common bin.
    seg = StageKind.SEGMENT.code
    rows = (_cells(seg, 0, 1, 2.0, {0: (1.0, 30), 3: (1.5, 80)})
            + _cells(seg, 0, 4, 3.0, {0: (1.0, 70), 3: (1.5, 40)}))
    kind, k, b, ms, idle = (np.array(c) for c in zip(*rows, strict=True))
    fit = S._fit_additive({"kind": kind, "k": k, "b": b, "ms": ms, "idle": idle,
                           "batch": np.arange(ms.size)})
    assert np.allclose(fit["resid"], 0.0, atol=1e-9)
    # bin 3 is the most common (120 of 220): the bases are the times after a 1.5 ms idle.
    assert np.exp(fit["base"]) == pytest.approx([3.0, 4.5])
    assert math.exp(fit["c"][seg][0]) == pytest.approx(1 / 1.5)


def _batched(phi: float, n_b: int, seed: int, within_sign: float = 1.0):
    """z of stages in batches of 2-7 with a batch effect that is AR(1) across batches; with
    ``within_sign`` -1, each batch's stages are pushed apart (negative pairwise correlation)."""
    rng = np.random.default_rng(seed)
    state = _ar1(phi, n_b, seed + 1) * np.sqrt(1 - phi ** 2)
    sizes = np.where(state > 0, 7, 2)  # slow spells form larger batches
    batch = np.repeat(np.arange(n_b), sizes)
    effect = np.repeat(state, sizes)
    if within_sign > 0:
        z = effect + rng.normal(size=batch.size)
    else:  # +d, -d, +d, ... around the batch effect: pairs anti-correlated
        sign = np.where(np.arange(batch.size) % 2 == 0, 1.0, -1.0)
        z = 0.3 * effect + 3.0 * sign * np.repeat(rng.normal(size=n_b), sizes)
    return {"kind": np.full(batch.size, StageKind.SEGMENT.code), "batch": batch}, z


def test_noise_corr_across_batches_is_the_ar1_of_the_batch_means():
    t, z = _batched(0.7, 20_000, 5)
    got = S._noise_corr(t, z)
    assert 0.3 < got["within"] < 0.7  # batch effect of variance 1 vs noise of 1
    assert got["across"] == pytest.approx(0.7, abs=0.05)


def test_noise_corr_is_zero_when_stages_in_a_batch_disagree():
    t, z = _batched(0.7, 5000, 6, within_sign=-1.0)
    assert S._noise_corr(t, z) == {"within": 0.0, "across": 0.0}


def test_noise_corr_is_capped_and_leaves_out_stages_without_noise():
    batch = np.repeat(np.arange(300), 3)
    z = np.repeat(np.random.default_rng(7).normal(size=300), 3)  # identical within a batch
    t = {"kind": np.full(batch.size, StageKind.HEAD.code), "batch": batch}
    assert S._noise_corr(t, z)["within"] == 0.99
    assert S._noise_corr(t, z * 1e-3)["within"] == 0.99  # tiny residuals: the same correlation
    z_nan = z.copy()
    z_nan[1::3] = np.nan  # one stage per batch has no noise: still identical pairs
    z_nan[2::3] = -z[2::3]  # the third now disagrees with the first
    assert S._noise_corr(t, z_nan)["within"] == 0.0
    checks = {"kind": np.full(batch.size, StageKind.CHECK.code), "batch": batch}
    assert S._noise_corr(checks, z) == {"within": 0.0, "across": 0.0}  # checks do not count


def test_kind_sigma_is_the_median_of_its_own_stages():
    keys = np.array([[1, 0, 1], [1, 0, 4], [1, 1, 1], [2, 0, 1]])
    sigma = np.array([0.1, np.nan, 0.3, np.nan])
    assert S._kind_sigma(keys, sigma, StageKind.SEGMENT) == pytest.approx(0.2)
    assert S._kind_sigma(keys, sigma, StageKind.HEAD) == 0.0


def test_tail_and_rows_are_rounded_and_never_negative():
    run = _run(30)
    run["batch_finish"] = run["batch_dispatch"] + 0.0031234567  # 3.1234567 ms busy, 3 timed
    assert S._tail([run]) == {"batch": [4], "ms": [round(3.1234567 - 3.0, 6)]}
    run["batch_finish"] = run["batch_dispatch"] + 0.0025  # busy < stage sum: no tail
    assert S._tail([run]) == {"batch": [4], "ms": [0.0]}
    assert S._tail([_run(19)]) == {"batch": [], "ms": []}  # under 20 batches of a size
    assert S._tail([_run(20)])["batch"] == [4]
    got = S.fill_rows([[4, 1.23456789, 0.123456, 40]], lambda b: 1.0)
    assert got == [[4, 1.234568, 0.1235, 40]]


# --- the capacity search -------------------------------------------------------------------


def test_the_capacity_is_given_with_half_its_final_bracket():
    assert C.CapacityResult(100.0, 110.0).plus_minus_rps == 5.0


def test_ci_is_the_t_interval_and_infinite_for_one_value():
    assert C._ci(np.array([0.5])) == math.inf
    # mean 2, sd sqrt(2): t(0.975, 1) * sqrt(2) / sqrt(2) = 12.7062...
    assert C._ci(np.array([1.0, 3.0])) == pytest.approx(12.7062047, rel=1e-6)


@pytest.mark.parametrize("slo, attainment, stat", [
    (25.0, 1.0, "attainment"), (25.0, 1.5, "attainment"), (25.0, 0.0, "attainment"),
    (0.0, 0.99, "attainment"), (math.inf, 0.99, "mean"), (25.0, 0.99, "median")])
def test_slo_checks(slo, attainment, stat):
    with pytest.raises(InputError):
        C._check_slo(slo, attainment, stat)


@dataclass(frozen=True)
class _Scenario:
    workload: Any


def _stub(monkeypatch, holds_up_to: float, at_target: float | None = None):
    """simulate/_statistic stubs: a rate holds when it is at most ``holds_up_to``; every
    probe's replications are recorded with their run's seed (which must not change). With
    ``at_target``, the rate ``holds_up_to`` gives exactly that statistic (never certain)."""
    seen: list[tuple[float, int, int]] = []

    def simulate(sc, run, breakdown=True):
        assert not breakdown  # probes need latencies only: the hot path
        rate = sc.workload.rate
        seen.append((rate, run.replications, run.seed))
        return SimpleNamespace(records=[rate] * run.replications)

    def statistic(records, warm, slo, stat):
        if at_target is not None and records[0] == holds_up_to:
            return np.full(len(records), at_target)
        return np.array([1.0 if r <= holds_up_to else 0.5 for r in records])

    monkeypatch.setattr(C, "simulate", simulate)
    monkeypatch.setattr(C, "_statistic", statistic)
    return seen


def _scenario(rate: float):
    def at_rate(r):
        return SimpleNamespace(rate=r, at_rate=at_rate, config=SimpleNamespace(rate_rps=r),
                               SCALES="rate_rps", unit_rate=lambda: 1.0)
    return _Scenario(workload=at_rate(rate))


def _run_cfg(reps: int = 2):
    return SimpleNamespace(replications=reps, warmup_fraction=0.1, seed=7,
                           model_copy=lambda update: SimpleNamespace(
                               **{**{"replications": reps, "warmup_fraction": 0.1, "seed": 7},
                                  **update}))


def test_the_search_doubles_then_bisects_with_the_same_seeds(monkeypatch):
    seen = _stub(monkeypatch, holds_up_to=1000.0)
    res = C.search_capacity(_scenario(300.0), _run_cfg(), 25.0, rel_tol=0.01)
    rates = [p.rate_rps for p in res.probes]
    assert rates[:3] == [300.0, 600.0, 1200.0]  # doubling until it fails
    assert rates[3:5] == [900.0, 1050.0]  # then halves of the bracket
    assert res.capacity_rps <= 1000.0 < res.failed_rps <= res.capacity_rps * 1.01
    assert {seed for _, _, seed in seen} == {7}  # common random numbers
    assert all(p.holds == (p.rate_rps <= 1000.0) and p.certain for p in res.probes)


def test_the_search_halves_when_the_start_fails(monkeypatch):
    _stub(monkeypatch, holds_up_to=100.0)
    res = C.search_capacity(_scenario(300.0), _run_cfg(), 25.0, rel_tol=0.01)
    assert [p.rate_rps for p in res.probes][:3] == [300.0, 150.0, 75.0]


def test_an_uncertain_probe_runs_up_to_four_times_the_replications(monkeypatch):
    seen = _stub(monkeypatch, 500.0, at_target=0.75)  # 0.75: exact in binary, as its mean is
    probe = C.holds_at(_scenario(500.0), _run_cfg(2), 500.0, 25.0, 0.75)
    assert [reps for _, reps, _ in seen] == [2, 4, 8]
    assert probe.replications == 8 and not probe.certain
    assert probe.holds  # exactly at the target holds (>=)


def test_the_search_caps_uncertain_probes_at_four_times_too(monkeypatch):
    seen = _stub(monkeypatch, 1000.0, at_target=0.75)  # at 1000 exactly 0.75: unsure
    res = C.search_capacity(_scenario(1000.0), _run_cfg(3), 25.0, attainment=0.75)
    assert [reps for rate, reps, _ in seen if rate == 1000.0] == [3, 6, 12]
    assert res.probes[0].replications == 12 and not res.probes[0].certain
    assert res.capacity_rps == 1000.0 and all(p.certain for p in res.probes[1:])


def test_a_search_that_never_holds_stops_with_the_advice(monkeypatch):
    _stub(monkeypatch, holds_up_to=-1.0)
    with pytest.raises(InputError, match="does not hold even at"):
        C.search_capacity(_scenario(1.0), _run_cfg(), 25.0, step=10.0)
    # It divides the start by the step down to a millionth of it, and no further.
    prober = C._Prober(_scenario(1.0), _run_cfg(), 25.0, 0.99, "attainment", 8, None)
    with pytest.raises(InputError):
        C._bracket(prober, 1.0, 10.0)
    assert [p.rate_rps for p in prober.probes] == pytest.approx([10.0 ** -i for i in range(7)])


def test_the_statistic_is_in_milliseconds_per_measured_request():
    arrival = np.arange(10) * 1.0
    fast = SimpleNamespace(arrival=arrival, finish=arrival + 0.02499)
    slow = SimpleNamespace(arrival=arrival, finish=arrival + 0.02501)
    assert C._statistic([fast, slow], 0.0, 25.0, "attainment").tolist() == [1.0, 0.0]
    assert C._statistic([fast], 0.0, 25.0, "mean") == pytest.approx([24.99])
    # The warm-up (the first 10% by arrival) is left out.
    first_slow = SimpleNamespace(arrival=arrival, finish=fast.finish + (arrival == 0) * 1.0)
    assert C._statistic([first_slow], 0.1, 25.0, "attainment").tolist() == [1.0]


# --- the sweep's grid checks and calibration points ----------------------------------------


@pytest.mark.parametrize("doc, field", [
    ([1, 2], None), ({}, None), ({"grid": {"server.max_batch": [8]}, "extra": 1}, None),
    ({"points": {"server.max_batch": 8}}, "points"), ({"points": [[8]]}, "points"),
    ({"points": [{}]}, "points"), ({"grid": {"max_batch": [8]}}, "max_batch")])
def test_bad_grids_are_refused(tmp_path, doc, field):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError) as err:
        load_grid(path)
    assert err.value.field == field


def test_a_sweep_resumed_with_other_sets_is_refused(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"trace": {"path": "fmnist-resnet"},
                                     "profile": {"path": "fmnist-resnet-cpu"}}))
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"grid": {"server.max_batch": [8, 16]}}))
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"set": ["server.max_wait_ms=1"]}))
    with pytest.raises(InputError, match="another -o folder"):
        check_sweep(study, grid, out, [])
    _, points, _, _ = check_sweep(study, grid, out, ["server.max_wait_ms=1"])
    assert points == [{"server.max_batch": 8}, {"server.max_batch": 16}]


def test_calibration_points_pick_only_the_named_load_and_mode():
    manifest = {"streams": {
        "shrink-L0": {"mode": "shrink", "load": {"utilisation": 0.3}},
        "shrink-L1": {"mode": "shrink", "load": {"utilisation": 0.6}},
        "keep-L0": {"mode": "keep", "load": {"utilisation": 0.3}}}}
    assert _calibration_keys(None, manifest, [{"load": "0.3"}]) == {"shrink-L0", "keep-L0"}
    assert _calibration_keys(None, manifest, [{"load": "0.3", "mode": "keep"}]) == {"keep-L0"}
    assert _calibration_keys(None, manifest, [{"mode": "shrink"}]) == {"shrink-L0", "shrink-L1"}


def test_unserved_sizes_follow_the_profile_from_the_nearest_served_ones():
    # Served 1.5x the profile at size 2, 1.0x at 6; the profile is 1 + b ms.
    ref = {b: 1.0 + b for b in (1, 2, 4, 6, 16)}
    rows = [[1, None, 0.1, 3], [2, 4.5, 0.2, 40], [4, None, 0.1, 0], [6, 7.0, 0.2, 35],
            [16, None, 0.1, 5]]
    got = S.fill_rows(rows, ref.__getitem__)
    assert [r[1] for r in got] == pytest.approx([2.0 * 1.5, 4.5, 5.0 * 1.25, 7.0, 17.0 * 1.0])
    assert [r[3] for r in got] == [3, 40, 0, 35, 5] and got[0][2] == 0.1
    assert S.fill_ratio({}, 5) == 1.0  # nothing served: the profile's own time
    assert S.fill_ratio({2: 1.0, 4: 2.0, 6: 1.0}, 4) == 2.0  # a trusted size keeps its own
    table = {"stages": {"segment 0": rows}, "factor": {"x": 1}}
    assert S.refill(table, lambda kind, k, b: ref[b]) == {"stages": {"segment 0": got},
                                                          "factor": {"x": 1}}


def test_point_names_are_readable_short_and_unique():
    from offramp.analysis.studies.sweep import point_name

    long = {"policy.name": "dynamic-ofa", "policy.levels": "x" * 300, "server.max_batch": 8}
    name = point_name(long)
    readable, digest = name.rsplit("-", 1)
    assert len(readable) == 120 and len(digest) == 8  # cut at 120 characters, then the hash
    assert point_name({**long, "server.max_batch": 16}) != name  # the hash tells them apart
    assert point_name({"server.max_batch": 8}).startswith("max_batch=8-")
