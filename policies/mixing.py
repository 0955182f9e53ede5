"""Mixing operating points: serve each request with point i with probability w_i.

Given operating points (accuracy_i, cost_i), the accuracy-maximising mix under an average-cost
budget is the LP max Σ w_i·acc_i s.t. Σ w_i·cost_i ≤ B, w ≥ 0, Σ w_i = 1 (cvxpy). Its value as
a function of B is the upper concave hull of the points (:func:`upper_hull` computes the hull
directly, for checks and plots).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from offramp.common.errors import InputError

from .lp import solve


@dataclass(frozen=True)
class Mix:
    """Weights per operating point and the mix's accuracy and average cost."""

    weights: np.ndarray
    accuracy: float
    cost_ms: float


def _points(accuracy: Sequence[float], cost_ms: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, c = np.asarray(accuracy, dtype=float), np.asarray(cost_ms, dtype=float)
    if a.ndim != 1 or a.shape != c.shape or a.size == 0 or not (np.isfinite(a).all()
                                                                and np.isfinite(c).all()):
        raise InputError("mixing", "points", "need equal-length, finite accuracy and cost lists",
                         "pass one accuracy and one cost per operating point")
    return a, c


def best_mix(accuracy: Sequence[float], cost_ms: Sequence[float], budget_ms: float) -> Mix:
    """The mix of operating points with the highest accuracy at average cost ≤ ``budget_ms``.

    Raises :class:`InputError` when even the cheapest point is over budget.
    """
    a, c = _points(accuracy, cost_ms)
    if budget_ms < c.min() - 1e-12:
        raise InputError("mixing", "budget_ms", f"{budget_ms} is below the cheapest point's cost "
                         f"{c.min():.4g}", "raise the budget")
    import cvxpy as cp

    w = cp.Variable(a.size, nonneg=True)
    prob = cp.Problem(cp.Maximize(a @ w), [cp.sum(w) == 1, c @ w <= budget_ms])
    solve(prob, "mixing LP")
    weights = np.clip(w.value, 0.0, None)
    weights /= weights.sum()
    return Mix(weights, float(a @ weights), float(c @ weights))


def upper_hull(accuracy: Sequence[float], cost_ms: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (cost, accuracy), by increasing cost, of the upper concave hull of the points
    that can be worth mixing: from the cheapest point (the most accurate among equally cheap)
    up to the most accurate one."""
    a, c = _points(accuracy, cost_ms)
    order = np.lexsort((-a, c))
    hull: list[tuple[float, float]] = []
    for x, y in zip(c[order], a[order], strict=True):
        if hull and x == hull[-1][0]:
            continue
        if hull and y <= hull[-1][1]:
            continue
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (y2 - y1) * (x - x1) <= (y - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append((x, y))
    h = np.array(hull)
    return h[:, 0], h[:, 1]


def hull_accuracy(accuracy: Sequence[float], cost_ms: Sequence[float], budget_ms: float) -> float:
    """The upper concave hull's accuracy at ``budget_ms`` (flat past the most accurate point)."""
    hc, ha = upper_hull(accuracy, cost_ms)
    if budget_ms < hc[0] - 1e-12:
        return float("nan")
    return float(np.interp(budget_ms, hc, ha))
