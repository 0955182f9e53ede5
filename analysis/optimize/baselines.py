"""What the optimizer's choice is compared with, on the same plot and table:

- no exits at its best batching (a grid over the space's max_batch and max_wait_ms), so the
  ratio is fair;
- PAME's own choice at τ = the relative-accuracy floor (99 without one), the study's batching;
- EENet at the budget (the goal's, else the winner's val average compute), the study's
  batching, when the trace holds the entropy and the softmax it needs;
- the best point of a plain grid over the same space given the search's simulated requests.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from offramp.analysis.optimize.evaluate import Outcome
from offramp.analysis.optimize.goal import Goal
from offramp.analysis.optimize.space import SearchSpace
from offramp.core.modes import ExitMode
from offramp.policies.configs import Tunable

GRID_LEVELS = 3


def levels(t: Tunable, n: int = GRID_LEVELS, scale: float = 1.0) -> list[Any]:
    """``n`` values spread over a range (log-spaced when it is), rounded for file names."""
    lo, hi = t.low * scale, t.high * scale
    vals = np.geomspace(lo, hi, n) if t.log and lo > 0 else np.linspace(lo, hi, n)
    if t.integer:
        return sorted({int(round(v)) for v in vals})
    return [round(float(v), 4) for v in vals]


def no_exit_points(space: SearchSpace) -> list[dict[str, Any]]:
    """No exits at every max_batch and a few max_wait_ms of the space."""
    waits = levels(space.max_wait_ms, 4)
    return [{"policy.name": "none", "server.exit_mode": ExitMode.NONE.value,
             "server.max_batch": b, "server.max_wait_ms": w}
            for b in space.max_batch for w in waits]


def pame_point(goal: Goal, exit_mode: ExitMode) -> dict[str, Any]:
    """PAME at τ = the relative-accuracy floor (99 without one)."""
    tau = 100.0 * goal.min_relative_accuracy if goal.min_relative_accuracy else 99.0
    return {"policy.name": "pame", "policy.tolerance_pct": round(tau, 4),
            "server.exit_mode": exit_mode.value}


def eenet_point(budget_ms: float, exit_mode: ExitMode) -> dict[str, Any]:
    """EENet fitted to a per-sample budget."""
    return {"policy.name": "eenet", "policy.budget_ms": round(budget_ms, 6),
            "server.exit_mode": exit_mode.value}


def grid_points(space: SearchSpace, full_cost_ms: float, seed: int) -> list[dict[str, Any]]:
    """Every point of a coarse grid over the space (each range at 3 levels), in a seeded
    random order: what a grid search given a budget gets through first."""
    points = []
    waits = levels(space.max_wait_ms)
    for name in space.policies:
        ranges = space.tunables(name)
        fields = list(ranges)
        values = [levels(ranges[f], scale=full_cost_ms if ranges[f].per else 1.0)
                  for f in fields]
        modes = [ExitMode.NONE] if name == "none" else space.exit_modes
        for combo in itertools.product(*values):
            for mode, b, w in itertools.product(modes, space.max_batch, waits):
                points.append({"policy.name": name,
                               **{f"policy.{f}": v for f, v in zip(fields, combo, strict=True)},
                               "server.exit_mode": mode.value, "server.max_batch": b,
                               "server.max_wait_ms": w})
    order = np.random.default_rng(seed).permutation(len(points))
    return [points[i] for i in order]


def within_budget(outcomes: list[Outcome], budget: int) -> list[Outcome]:
    """The grid's outcomes up to the first one at which the requests spent reach ``budget``."""
    out, spent = [], 0
    for o in outcomes:
        if spent >= budget:
            break
        out.append(o)
        spent += o.sim_requests
    return out


def grid_batches(points: list[dict[str, Any]], batch: int) -> list[list[dict[str, Any]]]:
    """The grid in batches (evaluated until the budget is spent)."""
    return [points[i:i + batch] for i in range(0, len(points), batch)]


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b when both are positive numbers."""
    if a is None or b is None or not (a > 0 and b > 0) or not math.isfinite(a / b):
        return None
    return a / b
