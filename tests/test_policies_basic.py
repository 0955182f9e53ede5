"""Costs, patience, the exp distribution, mixing and the oracle LP on hand-built inputs."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
from helpers import affine_profile, crafted_trace

from offramp.common.errors import InputError
from offramp.policies.budget import exp_fractions
from offramp.policies.costs import average_cost, evaluate, exit_costs, full_model_cost
from offramp.policies.mixing import best_mix, hull_accuracy, upper_hull
from offramp.policies.oracle_lp import BudgetedOracle, oracle_bound, oracle_frontier, oracle_lp
from offramp.policies.patience import Patience, unchanged_counts
from offramp.profiling.latency import LatencyModel


def test_exit_costs_from_profile():
    prof = affine_profile(3, range(1, 9), seg=(1.0, 0.1), head=(0.5, 0.0))
    # b = 1: segment 1.1, head 0.5 per exit.
    assert np.allclose(exit_costs(prof), [1.6, 3.2, 4.8])
    assert full_model_cost(prof) == pytest.approx(3.3 + 0.5)
    # b = 4: segment 1.4, head 0.5, per sample / 4.
    assert np.allclose(exit_costs(LatencyModel(prof), batch=4), np.cumsum([1.9] * 3) / 4)
    assert full_model_cost(prof, batch=4) == pytest.approx((3 * 1.4 + 0.5) / 4)
    assert average_cost(np.array([0, 2, 2, 1]), [1.0, 2.0, 3.0]) == pytest.approx(2.25)


def test_exit_costs_include_the_serving_loops_checks_and_handoffs():
    prof = affine_profile(3, range(1, 9), seg=(1.0, 0.1), head=(0.5, 0.0), check=(0.1, 0.0),
                          handoff=(0.05, 0.0))
    # b = 1: answering at exit k runs segments, heads and checks up to k, and the handoffs of
    # the boundaries passed: 1.1 + 0.5 + 0.1 = 1.7; then + 0.05 + 1.7 = 3.45; then the last
    # exit (no check): + 0.05 + 1.1 + 0.5 = 5.1.
    assert np.allclose(exit_costs(prof), [1.7, 3.45, 5.1])
    # No early exit: segments and handoffs, the last head: 3.3 + 0.1 + 0.5.
    assert full_model_cost(prof) == pytest.approx(3.9)


def test_patience_exits_where_predictions_settle():
    # crafted_trace predicts class 0 where correct, class 1 where wrong.
    rows = [[True] * 4, [False, True, True, True], [True, False, False, True],
            [False, True, False, True]]
    tr = crafted_trace(rows * 2, n_val=4)
    assert unchanged_counts(tr.pred[:4]).tolist() == [[0, 1, 2, 3], [0, 0, 1, 2], [0, 0, 1, 0],
                                                       [0, 0, 0, 0]]
    ids = np.arange(4)
    assert Patience(1).fit(tr).exit_index(tr, ids).tolist() == [1, 2, 2, 3]
    assert Patience(2).fit(tr).exit_index(tr, ids).tolist() == [2, 3, 3, 3]
    # τ = 100: t = 1 gets 3/4 right (the third sample exits wrong at 2), t = 2 gets all.
    assert Patience(tolerance_pct=100).fit(tr).patience_ == 2
    assert Patience(tolerance_pct=75).fit(tr).patience_ == 1
    with pytest.raises(InputError, match="exactly one"):
        Patience().fit(tr)


def test_exp_fractions_geometric_within_budget():
    c = [1.0, 2.0, 3.0]
    # Cost (1 + 2q + 3q²) / (1 + q + q²) = 2 at q = 1: the uniform distribution.
    assert np.allclose(exp_fractions(c, 2.0), [1 / 3] * 3, atol=1e-6)
    assert np.allclose(exp_fractions(c, 1.0), [1, 0, 0], atol=1e-6)
    assert np.allclose(exp_fractions(c, 5.0), [0, 0, 1], atol=1e-6)
    for budget in (1.3, 1.7, 2.4, 2.9):
        p = exp_fractions(c, budget)
        assert p @ c <= budget + 1e-12 and p @ c == pytest.approx(budget, abs=1e-6)
        assert np.all(np.diff(np.log(p)) == pytest.approx(np.log(p[1] / p[0])))
    with pytest.raises(InputError, match="below the first exit"):
        exp_fractions(c, 0.5)


def test_mixing_lp_is_the_upper_concave_hull():
    cost = [1.0, 2.0, 3.0, 4.0, 2.5, 5.0]
    acc = [0.5, 0.8, 0.85, 0.95, 0.6, 0.9]
    hc, ha = upper_hull(acc, cost)
    assert hc.tolist() == [1.0, 2.0, 4.0] and ha.tolist() == [0.5, 0.8, 0.95]
    for budget, want in [(1.0, 0.5), (1.5, 0.65), (2.0, 0.8), (3.0, 0.875), (4.0, 0.95),
                         (6.0, 0.95)]:
        mix = best_mix(acc, cost, budget)
        assert mix.accuracy == pytest.approx(want, abs=1e-7)
        assert mix.accuracy == pytest.approx(hull_accuracy(acc, cost, budget), abs=1e-7)
        assert mix.cost_ms <= budget + 1e-7 and mix.weights.sum() == pytest.approx(1)
    mix = best_mix(acc, cost, 3.0)
    assert np.allclose(mix.weights, [0, 0.5, 0, 0.5, 0, 0], atol=1e-6)
    with pytest.raises(InputError, match="below the cheapest"):
        best_mix(acc, cost, 0.5)


def test_oracle_lp_hand_solved():
    # Patterns: right everywhere / from exit 1 / only at the end / never. Costs 1, 2, 3.
    rows = [[True, True, True], [False, True, True], [False, False, True], [False, False, False]]
    tr = crafted_trace(rows, n_val=0)
    c = [1.0, 2.0, 3.0]
    assert oracle_bound(tr, c, 1.0) == pytest.approx(0.25)
    # One spare unit per sample on average over 4: move B to exit 1 (+1) and half of C to 2.
    assert oracle_bound(tr, c, 1.5) == pytest.approx(0.625)
    assert oracle_bound(tr, c, 1.75) == pytest.approx(0.75)
    assert np.allclose(oracle_frontier(tr, c, [0.5, 1.0, 1.5, 1.75, 3.0]),
                       [np.nan, 0.25, 0.625, 0.75, 0.75], equal_nan=True)
    pol = BudgetedOracle(1.75, c).fit(tr)
    assert pol.exit_index(tr, np.arange(4)).tolist() == [0, 1, 2, 0]


def test_grouped_lp_equals_per_sample_lp():
    rng = np.random.default_rng(3)
    correct = rng.random((60, 3)) < [0.4, 0.6, 0.8]
    c = np.array([1.0, 1.7, 2.5])
    for budget in (1.2, 1.6, 2.1):
        x = cp.Variable(correct.shape, nonneg=True)
        prob = cp.Problem(cp.Maximize(cp.sum(cp.multiply(x, correct)) / 60),
                          [cp.sum(x, axis=1) == 1, cp.sum(x @ c) / 60 <= budget])
        prob.solve(solver=cp.HIGHS)
        assert oracle_lp(correct, c, budget).accuracy == pytest.approx(prob.value, abs=1e-7)


def test_budgeted_oracle_realises_the_bound():
    from offramp.traces.synthetic import synthetic_trace

    tr = synthetic_trace(1000, seed=4)
    c = [1.0, 2.0, 3.0, 4.0]
    pol = BudgetedOracle(2.2, c).fit(tr)
    acc, cost = evaluate(pol, tr, c, "test")
    assert cost == pytest.approx(2.2, abs=0.02)
    assert acc == pytest.approx(oracle_bound(tr, c, 2.2), abs=0.01)
