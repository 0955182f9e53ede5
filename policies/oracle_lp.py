"""The budgeted oracle: the best accuracy any exit policy can reach at an average cost budget.

An LP over per-sample exit distributions x[n, k] ≥ 0, Σ_k x[n, k] = 1,
Σ_{n,k} x[n, k]·c_k / N ≤ B, maximising Σ_{n,k} x[n, k]·correct[n, k] / N. Samples with the
same correctness pattern (row of ``correct``) are interchangeable, so the LP is solved exactly
over patterns (at most 2^K variables rows) with their counts as weights. Every policy that
assigns each sample one exit is a feasible point of this LP, so its accuracy at its own
average cost never exceeds the bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from offramp.common.errors import InputError
from offramp.traces.format import ExitTrace

from .base import ExitPolicy
from .costs import check_costs
from .lp import solve


@dataclass(frozen=True)
class OracleSolution:
    """The LP's optimum: accuracy, average cost, and exit fractions per correctness pattern."""

    accuracy: float
    cost_ms: float
    patterns: np.ndarray  # (G, K) bool, distinct rows of ``correct``
    counts: np.ndarray  # (G,) samples per pattern
    fractions: np.ndarray  # (G, K) share of the pattern's samples sent to each exit


def oracle_lp(correct: np.ndarray, costs: Sequence[float], budget_ms: float) -> OracleSolution:
    """Solve the budgeted oracle LP for an (N, K) correctness matrix.

    A budget below the first exit's cost is infeasible: accuracy and cost are NaN.
    """
    correct = np.asarray(correct, dtype=bool)
    patterns, counts = np.unique(correct, axis=0, return_counts=True)
    frac = pattern_lp(patterns.astype(float), counts, costs, budget_ms)
    w = counts / counts.sum()
    if np.isnan(frac).any():
        return OracleSolution(float("nan"), float("nan"), patterns, counts, frac)
    c = check_costs(costs, correct.shape[1])
    return OracleSolution(float(w @ (frac * patterns).sum(axis=1)), float(w @ (frac @ c)),
                          patterns, counts, frac)


def pattern_lp(values: np.ndarray, counts: np.ndarray, costs: Sequence[float],
               budget_ms: float) -> np.ndarray:
    """(G, K) exit fractions per group maximising Σ_g w_g Σ_k x[g, k]·values[g, k] subject to
    Σ_g w_g Σ_k x[g, k]·c_k ≤ ``budget_ms`` (w_g = counts share); NaN below the first exit's
    cost. Groups are samples a policy cannot tell apart, ``values`` their mean payoff."""
    values = np.asarray(values, dtype=float)
    g, k_exits = values.shape
    c = check_costs(costs, k_exits)
    if budget_ms < c[0] - 1e-12:
        return np.full((g, k_exits), np.nan)
    import cvxpy as cp

    w = np.asarray(counts, dtype=float) / float(np.sum(counts))
    x = cp.Variable((g, k_exits), nonneg=True)
    acc = w @ cp.sum(cp.multiply(x, values), axis=1)
    cost = w @ (x @ c)
    prob = cp.Problem(cp.Maximize(acc), [cp.sum(x, axis=1) == 1, cost <= budget_ms])
    solve(prob, "oracle LP")
    frac = np.clip(x.value, 0.0, 1.0)
    return frac / frac.sum(axis=1, keepdims=True)


def oracle_bound(trace: ExitTrace, costs: Sequence[float], budget_ms: float,
                 split: str = "test") -> float:
    """The highest accuracy reachable on ``split`` at average cost ≤ ``budget_ms`` (NaN if none)."""
    return oracle_lp(trace.correct[trace.indices(split)], costs, budget_ms).accuracy


def oracle_frontier(trace: ExitTrace, costs: Sequence[float], budgets: Sequence[float],
                    split: str = "test") -> np.ndarray:
    """(len(budgets),) oracle bound at each budget."""
    correct = trace.correct[trace.indices(split)]
    return np.array([oracle_lp(correct, costs, b).accuracy for b in budgets])


class BudgetedOracle(ExitPolicy):
    """The LP's solution realised per sample (it reads the labels: a bound, not a policy).

    ``fit`` solves the LP on every split of the trace; samples of a pattern are sent to exits
    in sample order by the LP's fractions (rounded to whole samples, so the realised cost may
    differ from the budget by about one sample's cost).
    """

    name = "oracle"

    def __init__(self, budget_ms: float, costs: Sequence[float]):
        self.budget_ms = budget_ms
        self.costs = costs

    def fit(self, trace: ExitTrace, split: str = "val") -> BudgetedOracle:
        c = check_costs(self.costs, trace.n_exits)
        if self.budget_ms < c[0]:
            raise InputError("policy", "budget_ms", f"{self.budget_ms} ms is below the first "
                             f"exit's cost {c[0]:.4g} ms", "raise the budget")
        exits = np.full(trace.n_samples, trace.n_exits - 1)
        for name in ("val", "test"):
            ids = trace.indices(name)
            if ids.size == 0:
                continue
            sol = oracle_lp(trace.correct[ids], c, self.budget_ms)
            for pattern, frac in zip(sol.patterns, sol.fractions, strict=True):
                members = ids[(trace.correct[ids] == pattern).all(axis=1)]
                edges = np.round(np.cumsum(frac) * members.size).astype(int)
                exits[members] = np.searchsorted(edges, np.arange(members.size), side="right")
        self.exits_ = np.minimum(exits, trace.n_exits - 1)
        return super().fit(trace, split)

    def exit_mask(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        mask = np.zeros((len(samples), trace.n_exits), dtype=bool)
        mask[np.arange(len(samples)), self.exits_[samples]] = True
        return mask

