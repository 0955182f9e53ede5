"""PAME: precision kept on val, exact matrices on a hand-built case, no exit when exits don't pay."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import affine_profile, crafted_trace, scenario

from offramp.common.errors import InputError
from offramp.core.modes import ExitMode
from offramp.policies.pame import PAME
from offramp.profiling.latency import LatencyModel
from offramp.profiling.synthetic import synthetic_profile
from offramp.sim.config import RunConfig, ServerConfig, WorkloadConfig
from offramp.sim.runner import simulate
from offramp.sim.service import ServiceTimes
from offramp.traces.synthetic import synthetic_trace

ALL_RIGHT = [[True, True, True]] * 32


def test_pame_exact_on_hand_built_case():
    # Every sample is right everywhere: τ = 100 lets all exit at exit 0.
    # Batch of 8: overhead 0.1, segment 1 + 0.1·8 = 1.8, head 0.5.
    tr = crafted_trace(ALL_RIGHT, n_val=32)
    prof = affine_profile(3, range(1, 9))
    pol = PAME(100, prof, max_batch=8, tail_tolerance_pct=25).fit(tr)
    assert pol.exits_ == [0]
    assert pol.report_["expected_batch_ms"] == pytest.approx(0.1 + 1.8 + 0.5)
    assert pol.report_["no_exit_batch_ms"] == pytest.approx(0.1 + 3 * 1.8 + 0.5)
    # Worst case: 7 of 8 survive exit 0: 0.1 + 2.3 + gather(7) 0.55 + 2·1.7 + 0.5.
    assert pol.report_["worst_batch_ms"] == pytest.approx(0.1 + 2.3 + 0.55 + 3.4 + 0.5)
    assert pol.active_exits_.tolist() == [True, False, True]
    assert np.isinf(pol.thresholds_[1])
    # The Batching Pattern Matrix: every batch leaves exit 0 with 0 survivors.
    assert pol.pattern_.shape == (2, 9) and pol.pattern_[0, 0] == 1.0
    # T_0(k) = overhead + s1(8) + gather(k) + s2(k).
    t = pol.times_[0]
    assert t[0] == pytest.approx(2.4) and t[8] == pytest.approx(2.4 + 2 * 1.8 + 0.5)
    assert t[4] == pytest.approx(2.4 + (0.2 + 0.05 * 4) + 2 * 1.4 + 0.5)
    json.dumps(pol.report_)
    # The default 5 % tail rule forbids it: the worst case is 14 % over no exits.
    assert PAME(100, prof, max_batch=8).fit(tr).exits_ == []


def test_pame_places_no_exit_when_heads_cost_more_than_they_save():
    tr = crafted_trace(ALL_RIGHT, n_val=32)
    prof = affine_profile(3, range(1, 9), head=(20.0, 0.0), last_head=(0.5, 0.0))
    pol = PAME(100, prof, max_batch=8, tail_tolerance_pct=1000).fit(tr)
    assert pol.exits_ == [] and np.isinf(pol.thresholds_).all()
    assert pol.report_["expected_batch_ms"] == pol.report_["no_exit_batch_ms"]
    # With every sample exiting, each candidate costs overhead + segments + a 20 ms head.
    for e, cand in pol.report_["steps"][0]["candidates"].items():
        assert cand["expected_ms"] == pytest.approx(0.1 + (e + 1) * 1.8 + 20.0)


@pytest.mark.parametrize("tau", [95, 98, 99, 100])
@pytest.mark.parametrize("mode", ["shrink", "keep"])
def test_pame_keeps_tau_relative_accuracy_on_val(tau, mode):
    tr = synthetic_trace(4000)
    pol = PAME(tau, synthetic_profile(), max_batch=32, exit_mode=mode).fit(tr)
    ids = tr.indices("val")
    acc = tr.correct[ids, pol.exit_index(tr, ids)].mean()
    assert acc >= tr.correct[ids, -1].mean() * tau / 100 - 1e-12
    rep = pol.report_
    assert rep["val_relative_accuracy_pct"] >= tau - 1e-9
    assert rep["expected_batch_ms"] <= rep["no_exit_batch_ms"]
    assert rep["worst_batch_ms"] <= rep["tail_limit_ms"] + 1e-9
    # E_e = Σ_k P[e][k]·T_e(k) for every single candidate at the first step.
    single = {e: c["expected_ms"] for e, c in rep["steps"][0]["candidates"].items()}
    assert np.allclose((pol.pattern_ * pol.times_).sum(axis=1), [single[e] for e in sorted(single)])
    assert np.allclose(pol.pattern_.sum(axis=1), 1.0)


def test_pame_expected_batch_latency_matches_the_simulator():
    # One early exit and a fully loaded server: batches are full, every head PAME places runs.
    tr = synthetic_trace(6000, n_exits=2, seed=1)
    prof = synthetic_profile(n_exits=2)
    pol = PAME(97, prof, max_batch=16).fit(tr)
    assert pol.exits_ == [0]
    server = ServerConfig(max_batch=16, max_wait_ms=0.0)
    svc = ServiceTimes.from_latency(LatencyModel(prof), n_exits=2, max_batch=16,
                                    mode=ExitMode.SHRINK, sampled=False)
    res = simulate(scenario(tr, pol, svc, server,
                            WorkloadConfig(rate_rps=20000)),
                   RunConfig(requests=20000, replications=1, warmup_fraction=0.1))
    rec = res.records[0]
    full = rec.batch_sizes[:, 0] == 16
    sim_ms = 1000 * (rec.batch_finish - rec.batch_dispatch)[full].mean()
    assert sim_ms == pytest.approx(pol.report_["expected_batch_ms"], rel=0.02)


def test_pame_bad_settings():
    tr = crafted_trace(ALL_RIGHT, n_val=32)
    prof = affine_profile(3, range(1, 9))
    with pytest.raises(InputError, match="exit mode"):
        PAME(99, prof, max_batch=8, exit_mode="none").fit(tr)
    with pytest.raises(InputError, match="max_batch"):
        PAME(99, prof, max_batch=64).fit(tr)
    with pytest.raises(InputError, match="larger than the largest engine"):
        PAME(99, prof, max_batch=8, engine_sizes=[4]).fit(tr)


def test_pame_keep_mode_times_by_hand():
    # keep: a batch runs at its full size (8) while anyone is left, and nothing is gathered.
    # overhead 0.1; segment(8) = 1.8; head(8) = 0.5; no exits: 0.1 + 3·1.8 + 0.5 = 6.0.
    tr = crafted_trace(ALL_RIGHT, n_val=32)
    prof = affine_profile(3, range(1, 9))
    pol = PAME(100, prof, max_batch=8, exit_mode="keep", tail_tolerance_pct=10).fit(tr)
    assert pol.exits_ == [0]
    assert pol.report_["no_exit_batch_ms"] == pytest.approx(6.0)
    assert pol.report_["expected_batch_ms"] == pytest.approx(0.1 + 1.8 + 0.5)
    # Worst case: anyone left keeps the batch at 8 through the rest: 2.4 + 1.8 + 1.8 + 0.5.
    assert pol.report_["worst_batch_ms"] == pytest.approx(6.5)
    # T_0(k): 2.4 with nobody left, 6.5 for any k >= 1 (no compaction, full size).
    assert pol.times_[0] == pytest.approx([2.4] + [6.5] * 8)
    # T_1(k): segments 0, 1 and head 1 at 8 (0.1 + 3.6 + 0.5), then segment 2 + head 2 at 8.
    assert pol.times_[1] == pytest.approx([4.2] + [6.5] * 8)
    # shrink pays the gather and runs survivors at their own size instead: T_0(4) differs.
    shrink = PAME(100, prof, max_batch=8, exit_mode="shrink", tail_tolerance_pct=25).fit(tr)
    assert shrink.times_[0][4] == pytest.approx(2.4 + 0.4 + 2 * 1.4 + 0.5)
    # The 8.3 % worst-case rise is over a 5 % tail rule: no exit then.
    assert PAME(100, prof, max_batch=8, exit_mode="keep").fit(tr).exits_ == []


def test_pame_says_why_it_placed_what_it_placed():
    tr = crafted_trace(ALL_RIGHT, n_val=32)
    costly = affine_profile(3, range(1, 9), head=(20.0, 0.0), last_head=(0.5, 0.0))
    pol = PAME(100, costly, max_batch=8, tail_tolerance_pct=1000).fit(tr)
    assert pol.explain().startswith("placed no exit: every early exit makes a batch slower")
    cheap = affine_profile(3, range(1, 9), head=(0.5, 0.0), last_head=(0.5, 0.0))
    # Every sample is right at exit 0, so exits save time on average; but a batch where none
    # leaves pays the heads too, over a tail limit of +0%.
    tight = PAME(100, cheap, max_batch=8, tail_tolerance_pct=0).fit(tr)
    assert tight.exits_ == [] and "exceeds the tail limit" in tight.explain()
    assert "raise tail_tolerance_pct" in tight.explain()
    loose = PAME(100, cheap, max_batch=8, tail_tolerance_pct=1000).fit(tr)
    assert loose.exits_ and loose.explain().startswith(f"placed exits {loose.exits_}")
