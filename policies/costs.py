"""The per-sample cost model shared by every cost-aware policy.

From a measured latency profile and a batch size b (default 1), the cumulative per-sample cost
(ms) of answering at exit k is what the execution rule (:mod:`offramp.profiling.stages`) runs
for a batch of b that all leaves at exit k, without the per-batch overhead, over b: with the
v1 stages ``c_k = Σ_{j≤k} (segment_j(b) + head_j(b)) / b``, the backbone up to exit k plus
every head on the way (the serving loop runs them all). The full model without early heads
costs ``(Σ_j segment_j(b) + head_{K-1}(b)) / b``.

Convention: a policy that needs costs takes them in ``__init__`` as ``costs`` (a length-K
array in ms, e.g. from :func:`exit_costs`); ``fit`` keeps the scikit-learn signature
``fit(trace, split)``. The average cost of a policy on a split is the mean over its samples of
``c_{exit}`` (:func:`average_cost`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from offramp.common.errors import InputError
from offramp.core import execution as stages
from offramp.core.modes import ExitMode, StageKind
from offramp.profiling.format import LatencyProfile
from offramp.profiling.latency import LatencyModel
from offramp.traces.format import ExitTrace

from .base import ExitPolicy


def as_latency_model(latency: LatencyModel | LatencyProfile,
                     engine_sizes: Sequence[int] | None = None) -> LatencyModel:
    """A :class:`LatencyModel` over ``latency``; ``engine_sizes`` re-buckets it when given."""
    if isinstance(latency, LatencyProfile):
        return LatencyModel(latency, engine_sizes)
    if isinstance(latency, LatencyModel):
        return (LatencyModel(latency.profile, engine_sizes, latency.costs) if engine_sizes
                else latency)
    raise TypeError(f"need a LatencyModel or LatencyProfile, got {type(latency).__name__}")


def exit_costs(latency: LatencyModel | LatencyProfile, batch: int = 1) -> np.ndarray:
    """(K,) cumulative per-sample cost in ms of answering at each exit, at batch size ``batch``.

    The stages the execution rule runs for a batch that all leaves at exit k, less the
    per-batch dispatch overhead, per sample.
    """
    model = as_latency_model(latency)
    return placement_costs(model, ExitMode.SHRINK, (True,) * model.profile.n_exits, batch)


def full_model_cost(latency: LatencyModel | LatencyProfile, batch: int = 1) -> float:
    """Per-sample cost in ms of the full model run without early heads."""
    model = as_latency_model(latency)
    return _without_overhead(model, stages.no_exit(batch, model.profile.n_exits)) / batch


def placement_costs(latency: LatencyModel | LatencyProfile, mode: ExitMode | str,
                    active: Sequence[bool], batch: int = 1) -> np.ndarray:
    """(K,) per-sample ms until a sample answered at exit k leaves, with only the exits
    ``active`` consulted (the last always) under exit ``mode``: the execution rule's
    :func:`~offramp.core.execution.timeline` of a batch of ``batch`` that all leaves at k,
    less the overhead, over ``batch``. Where lookups are synchronous a miss pays each consulted
    head and check on the way; in ``async`` only the leavers' own lookup is on their path
    (and a wait, where an earlier lookup outlasts the segments to the next exit). NaN at an
    exit that is not consulted."""
    model = as_latency_model(latency)
    k_exits = model.profile.n_exits
    on = [bool(a) for a in active[:-1]] + [True]
    out = np.full(k_exits, np.nan)
    for k in (j for j in range(k_exits) if on[j]):
        going = tuple(batch if j < k else 0 for j in range(k_exits - 1))
        plan = stages.batch_plan(mode, batch, going, tuple(on))
        ms = [0.0 if st.kind is StageKind.OVERHEAD else model.lookup(st.kind, st.k, st.batch)[0]
              for st in plan.stages]
        out[k] = stages.timeline(plan, ms)[1][k] / batch
    return out


def _without_overhead(model: LatencyModel, plan: stages.BatchPlan) -> float:
    return model.stages_ms(s for s in plan.stages if s.kind is not StageKind.OVERHEAD)


def check_costs(costs: Sequence[float], n_exits: int) -> np.ndarray:
    """``costs`` as a float array, checked: K finite, positive, non-decreasing values."""
    c = np.asarray(costs, dtype=float)
    if c.shape != (n_exits,) or not np.isfinite(c).all() or (c <= 0).any():
        raise InputError("policy", "costs", f"need {n_exits} positive costs in ms (one per exit), "
                         f"got {list(np.atleast_1d(c))}", "pass policies.costs.exit_costs(profile)")
    if (np.diff(c) < 0).any():
        raise InputError("policy", "costs", f"cumulative costs must not decrease, got {list(c)}",
                         "pass cumulative costs (cost to answer at exit k)")
    return c


def average_cost(exits: np.ndarray, costs: Sequence[float]) -> float:
    """Mean of ``costs[exit]`` over samples."""
    return float(np.asarray(costs, dtype=float)[np.asarray(exits)].mean())


def evaluate(policy: ExitPolicy, trace: ExitTrace, costs: Sequence[float],
             split: str = "test") -> tuple[float, float]:
    """(accuracy, average cost in ms) of a fitted static policy on a split."""
    ids = trace.indices(split)
    exits = policy.exit_index(trace, ids)
    return float(trace.correct[ids, exits].mean()), average_cost(exits, costs)
