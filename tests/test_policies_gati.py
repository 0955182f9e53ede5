"""Gati: selectors learn agreement; the placement is the hand-computed optimum."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import affine_profile, crafted_trace

from offramp.policies.costs import evaluate, exit_costs, placement_costs
from offramp.policies.gati import Gati, fit_logistic
from offramp.traces.synthetic import synthetic_trace

# Half right (and agreeing with the last exit) everywhere, a quarter from exit 1, a quarter
# only at the end. Costs 1, 2, 3.
ROWS = [[True, True, True]] * 20 + [[False, True, True]] * 10 + [[False, False, True]] * 10
COSTS = [1.0, 2.0, 3.0]


def test_gati_chooses_the_latency_optimal_subset():
    tr = crafted_trace(ROWS * 2, n_val=40)
    pol = Gati(1.0, COSTS).fit(tr)
    # {0, 1}: 0.5·1 + 0.25·2 + 0.25·3 = 1.75 < {0}: 2.0 < {1}: 2.25 < {}: 3.
    assert pol.exits_ == [0, 1] and pol.feasible_
    assert pol.expected_latency_ms_ == pytest.approx(1.75)
    assert evaluate(pol, tr, COSTS, "test") == pytest.approx((1.0, 1.75))
    # A slow lookup at exit 1 (1.5 ms per hit) makes {0} the better subset: 2.0 < 2.125.
    slow = Gati(1.0, COSTS, lookup_ms=[0.0, 1.5, 0.0]).fit(tr)
    assert slow.exits_ == [0] and slow.expected_latency_ms_ == pytest.approx(2.0)
    assert slow.active_exits_.tolist() == [True, False, True]
    json.dumps(slow.get_params())


def test_gati_accuracy_constraint_and_infeasible_target():
    # Exit 0 agrees with the last exit but both are wrong for the last ten samples (label 1).
    rows = [[True, True, True]] * 30 + [[False, False, False]] * 10
    tr = crafted_trace(rows * 2, n_val=40)
    pol = Gati(0.75, COSTS).fit(tr)
    assert pol.exits_ == [0] and pol.val_accuracy_ == pytest.approx(0.75)
    over = Gati(0.9, COSTS).fit(tr)
    assert not over.feasible_ and over.val_accuracy_ == pytest.approx(0.75)


def test_selectors_track_agreement_on_synthetic_data():
    tr = synthetic_trace(3000, seed=2)
    c = [1.0, 2.0, 3.0, 4.0]
    target = tr.accuracy("val")[-1] - 0.02
    pol = Gati(target, c, threshold=None).fit(tr)
    ids = tr.indices("val")
    probs = pol.scores(tr)[ids, :-1]
    agree = tr.agree[ids, :-1]
    # Calibrated on average, and better than chance at telling agreement apart.
    assert np.allclose(probs.mean(axis=0), agree.mean(axis=0), atol=0.02)
    assert all(probs[agree[:, k], k].mean() > probs[~agree[:, k], k].mean() + 0.1 for k in range(3))
    acc, cost = evaluate(pol, tr, c, "val")
    assert acc >= target - 1e-12 and cost < 4.0 and pol.threshold_ in np.round(np.arange(0.5, 0.96, 0.05), 2)


def test_fit_logistic_recovers_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    y = (rng.random(4000) < 1 / (1 + np.exp(-(2 * x[:, 0] - x[:, 1] + 0.5)))).astype(float)
    assert np.allclose(fit_logistic(x, y, l2=1e-6), [2, -1, 0.5], atol=0.2)


def test_the_searched_threshold_is_the_default_and_reads_val_only():
    import dataclasses

    from offramp.policies.gati import THRESHOLD_GRID
    from offramp.traces.synthetic import synthetic_trace

    tr = synthetic_trace(3000, n_exits=3, seed=5)
    costs = [1.0, 2.0, 3.0]
    target = float(tr.accuracy("val")[-1]) - 0.01
    searched = Gati(target, costs).fit(tr)
    assert searched.threshold is None and searched.threshold_ in THRESHOLD_GRID
    assert max(THRESHOLD_GRID) > 0.95
    # Test labels scrambled: nothing the fit chose moves.
    test = tr.indices("test")
    labels = tr.labels.copy()
    labels[test] = (labels[test] + 1) % tr.n_classes
    scrambled = dataclasses.replace(tr, labels=labels, correct=tr.pred == labels[:, None])
    again = Gati(target, costs).fit(scrambled)
    assert (again.threshold_, again.exits_) == (searched.threshold_, searched.exits_)
    assert again.val_accuracy_ == searched.val_accuracy_
    # A given threshold is used as it is.
    assert Gati(target, costs, threshold=0.5).fit(tr).threshold_ == 0.5


def test_placement_times_follow_the_exit_mode():
    # Segments 1.1 ms, early heads 2 ms, the last 0.5 ms, at batch 1 (overhead left out).
    prof = affine_profile(3, range(1, 3), head=(2.0, 0.0), last_head=(0.5, 0.0))
    every = (True, True, True)
    # Synchronous lookups: every consulted head is on the way (the per-sample exit costs).
    assert placement_costs(prof, "shrink", every) == pytest.approx(exit_costs(prof))
    assert placement_costs(prof, "keep", every) == pytest.approx([3.1, 6.2, 7.8])
    sync_0 = placement_costs(prof, "keep", (True, False, True))
    assert sync_0[[0, 2]] == pytest.approx([3.1, 5.8]) and np.isnan(sync_0[1])
    # async: exit 0's lookup ends at 3.1; the backbone reaches exit 1 at 2.2, waits until 3.1,
    # exit 1's lookup ends at 5.1; the backbone reaches exit 2 at 4.2, waits until 5.1, + 0.5.
    assert placement_costs(prof, "async", every) == pytest.approx([3.1, 5.1, 5.6])
    # Exit 0 alone: the backbone reaches exit 2 at 3.3, after the lookup: it pays nothing.
    assert placement_costs(prof, "async", (True, False, True))[[0, 2]] == pytest.approx([3.1, 3.8])


@pytest.mark.parametrize(("mode", "exits", "latency"), [("keep", [], 3.8), ("async", [0], 3.45)])
def test_the_placement_weighs_lookups_as_the_server_runs_them(mode, exits, latency):
    from offramp.policies.registry import build_policy
    from offramp.sim.config import ServerConfig

    prof = affine_profile(3, range(1, 3), head=(2.0, 0.0), last_head=(0.5, 0.0))
    tr = crafted_trace(ROWS * 2, n_val=40)
    pol = build_policy({"name": "gati", "accuracy_target": 1.0}, tr, prof,
                       ServerConfig(max_batch=2, exit_mode=mode))
    # Heads of 2 ms: paid by every miss, no exit is worth it (the full model, 3.8 ms, beats
    # exit 0 alone at 0.5·3.1 + 0.5·5.8 = 4.45); beside the backbone, exit 0 pays:
    # 0.5·3.1 + 0.5·3.8 = 3.45.
    assert pol.exits_ == exits and pol.expected_latency_ms_ == pytest.approx(latency)
    json.dumps(pol.get_params())
