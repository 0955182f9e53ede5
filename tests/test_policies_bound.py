"""The budgeted oracle LP against optima computed here independently, not by the LP.

Two independent routes to the same optimum. Brute force: on a tiny trace, every deterministic
exit assignment is a point (mean cost, accuracy); the LP's feasible set is their convex hull,
so its optimum at budget B is the best mix of two such points with mean cost <= B.
Knapsack: the cheapest way to make a sample right is its earliest correct exit, so the LP is a
fractional knapsack (value 1, weight c_earliest - c_0) that a greedy pass solves exactly.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import crafted_trace, knapsack_bound

from offramp.policies.costs import evaluate, exit_costs
from offramp.policies.oracle_lp import BudgetedOracle, oracle_bound, oracle_frontier
from offramp.profiling.synthetic import synthetic_profile
from offramp.traces.synthetic import synthetic_trace

TRACE = synthetic_trace(1500, seed=7)
COSTS = exit_costs(synthetic_profile())


def brute_force_bound(correct: np.ndarray, costs: np.ndarray, budget: float) -> float:
    """Best mix of two deterministic assignments with mean cost <= budget (all pairs)."""
    n, k = correct.shape
    pts = set()
    for assign in itertools.product(range(k), repeat=n):
        idx = np.array(assign)
        pts.add((float(costs[idx].mean()), float(correct[np.arange(n), idx].mean())))
    best = -np.inf
    for (c1, a1), (c2, a2) in itertools.product(pts, repeat=2):
        if c1 <= budget + 1e-12 and c2 <= budget + 1e-12:
            best = max(best, a1, a2)
        elif c1 <= budget < c2:
            w = (c2 - budget) / (c2 - c1)  # weight on the cheap point; mean cost = budget
            best = max(best, w * a1 + (1 - w) * a2)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bound_equals_brute_force_on_tiny_traces(seed):
    rng = np.random.default_rng(seed)
    correct = rng.random((6, 3)) < [0.3, 0.5, 0.8]
    costs = np.array([1.0, 1.6, 2.5])
    tr = crafted_trace(correct.tolist(), n_val=0)
    for budget in (1.0, 1.2, 1.45, 1.8, 2.2, 2.5):
        want = brute_force_bound(correct, costs, budget)
        assert oracle_bound(tr, costs, budget) == pytest.approx(want, abs=1e-7), budget


def test_bound_equals_the_greedy_knapsack_on_a_large_trace():
    test = TRACE.indices("test")
    budgets = [COSTS[0], 0.5 * (COSTS[0] + COSTS[1]), COSTS[1], 1.3 * COSTS[1], COSTS[2],
               COSTS[3]]
    got = oracle_frontier(TRACE, COSTS, budgets)
    want = [knapsack_bound(TRACE.correct[test], COSTS, b) for b in budgets]
    assert got == pytest.approx(want, abs=1e-7)
    # Below the cheapest exit nothing is feasible.
    assert np.isnan(oracle_frontier(TRACE, COSTS, [0.5 * COSTS[0]])[0])


def test_budgeted_oracle_policy_reaches_the_knapsack_bound_on_its_split():
    pol = BudgetedOracle(1.2 * COSTS[1], COSTS).fit(TRACE)
    acc, cost = evaluate(pol, TRACE, COSTS, "val")
    val = TRACE.indices("val")
    assert cost <= 1.2 * COSTS[1] + 1e-6
    # Rounding the LP to one exit per sample loses at most one sample's worth.
    assert acc == pytest.approx(knapsack_bound(TRACE.correct[val], COSTS, 1.2 * COSTS[1]),
                                abs=1.5 / val.size)
