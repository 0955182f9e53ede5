"""Per-sample cost budgets: the range a budget can take, EENet's geometric exit fractions, and
lowering a score policy's thresholds into a budget."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from offramp.common.errors import InputError

from .costs import average_cost, check_costs


def budget_range(costs: Sequence[float], what: str = "a budget") -> str:
    """The budgets that mean something for these per-exit costs, as advice (``what``: how the
    user gives one, e.g. ``--budget-ms``)."""
    return (f"give {what} between {costs[0]:.4g} ms (everything at the first exit) and "
            f"{costs[-1]:.4g} ms (the full model) per sample")


def budget_costs(costs: Sequence[float], n_exits: int, budget_ms: float) -> np.ndarray:
    """The per-exit costs, checked, for a policy fitted to ``budget_ms``: one error naming the
    range that means something where the budget is below the first exit's cost."""
    c = check_costs(costs, n_exits)
    if budget_ms < c[0]:
        raise InputError("policy", "budget_ms", f"{budget_ms} ms is below the first exit's cost "
                         f"{c[0]:.4g} ms", budget_range(c))
    return c


def exp_fractions(costs: Sequence[float], budget_ms: float) -> np.ndarray:
    """EENet's geometric exit distribution p_k ∝ q^k with the largest q whose nominal cost
    Σ p_k c_k stays within ``budget_ms`` (a budget at or above the last exit's cost sends
    everything there)."""
    c = budget_costs(costs, len(costs), budget_ms)
    k = np.arange(c.size)

    def dist(log_q: float) -> np.ndarray:
        z = k * log_q
        p = np.exp(z - z.max())
        return p / p.sum()

    lo, hi = -60.0, 60.0
    if dist(hi) @ c <= budget_ms:
        return dist(hi)
    for _ in range(200):  # cost grows with q: bisect for the last q within budget
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if dist(mid) @ c <= budget_ms else (lo, mid)
    return dist(lo)


def exits_for(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Exit of each sample: the first early exit whose score reaches its threshold, else the last."""
    mask = np.concatenate([scores[:, :-1] >= thresholds[None, :],
                           np.ones((scores.shape[0], 1), dtype=bool)], axis=1)
    return mask.argmax(axis=1)


def within_budget(scores: np.ndarray, thresholds: np.ndarray, costs: np.ndarray,
                  budget_ms: float, steps: int = 60) -> tuple[np.ndarray, float]:
    """(thresholds, δ): ``thresholds`` lowered by the least common δ ≥ 0 whose average cost on
    these scores is within ``budget_ms`` (δ = 0 where they already are). Lowering every
    threshold only moves exits earlier, so the cost falls as δ grows: bisection."""
    def cost(delta: float) -> float:
        return average_cost(exits_for(scores, thresholds - delta), costs)

    if cost(0.0) <= budget_ms:
        return thresholds, 0.0
    finite = np.isfinite(thresholds)
    span = float(np.ptp(scores)) + float(np.abs(thresholds[finite]).max(initial=0.0)) + 1.0
    lo, hi = 0.0, span
    if cost(hi) > budget_ms:
        # Every open exit fully open still overspends: exit 0, closed as calibrated, opens just
        # as far as the budget needs (bisection on its threshold alone).
        out = thresholds - hi
        s0 = scores[:, 0]
        lo0, hi0 = float(s0.min()) - 1.0, float(s0.max()) + 1.0  # all at exit 0 .. none
        for _ in range(steps):
            mid = 0.5 * (lo0 + hi0)
            out[0] = mid
            lo0, hi0 = (mid, hi0) if average_cost(exits_for(scores, out), costs) <= budget_ms \
                else (lo0, mid)
        out[0] = lo0
        return out, float("inf")
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if cost(mid) <= budget_ms else (mid, hi)
    return thresholds - hi, hi
