"""One candidate of a search: the study with the candidate's fields set, its policy fitted on
val, its accuracy and compute checked against the goal's constraints on val (without a
simulation when they fail), then its objective simulated with common random numbers (every
candidate replays the same seeds). Runs in a worker process: everything comes in arguments."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from offramp.analysis.optimize.goal import Goal, Objective
from offramp.analysis.studies.capacity import _ci as capacity_ci
from offramp.analysis.studies.capacity import (
    holds_at,
    probe_requests,
    search_capacity,
    simulated_requests,
)
from offramp.analysis.study.config import StudyConfig, parse_config
from offramp.analysis.study.overrides import apply_fields
from offramp.analysis.study.resolve import (
    build_scenario,
    load_study_profile,
    load_study_trace,
    study_costs,
)
from offramp.common.errors import InputError
from offramp.policies.costs import average_cost, exit_costs
from offramp.sim.runner import simulate
from offramp.traces.format import ExitTrace

BOOTSTRAP = 1000


@dataclass(frozen=True)
class Outcome:
    """A candidate's result. ``value`` is the objective (capacity req/s, replicas, or val
    accuracy); ``feasible``: every constraint kept (on val) and the SLO held."""

    point: dict[str, Any]
    feasible: bool
    value: float
    reason: str
    violations: dict[str, float]
    val_accuracy: float | None  # None: the policy could not be fitted
    val_relative_accuracy: float | None
    test_accuracy: float | None
    test_relative_accuracy: float | None
    cost_ms: float | None
    exit_fractions: list[float]
    capacity_rps: float | None = None
    capacity_ci95_rps: float | None = None
    replicas: int = 1
    sim_requests: int = 0
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)


def candidate_study(base: dict[str, Any], point: dict[str, Any], run: dict[str, Any],
                    source: str) -> StudyConfig:
    """The base study (a mapping) with the candidate's fields and the run settings set."""
    data = apply_fields(base, point, source)
    data["run"] = {**(data.get("run") or {}), **run}
    return parse_config(data, f"{source} at {point}")


@lru_cache(maxsize=4)
def _trace(cfg_trace: str, base: str) -> ExitTrace:
    from offramp.analysis.study.config import TraceSection

    return load_study_trace(StudyConfig(trace=TraceSection(path=cfg_trace)), Path(base))


def evaluate(base: dict[str, Any], point: dict[str, Any], goal: Goal, run: dict[str, Any],
             study_dir: str, source: str, seeds: int = 1, rel_tol: float = 0.02,
             detail: bool = False, start_rps: float | None = None) -> Outcome:
    """Evaluate one candidate (see the module docstring); ``seeds`` independent searches
    (seed, seed + 1, ...) give the objective's mean and 95% CI; ``detail`` adds the p99, mean
    batch size and exit fractions at the judged rate, and the test accuracy's bootstrap CI;
    ``start_rps`` (a screening's capacity) starts the capacity searches near their answer."""
    t0 = time.perf_counter()
    cfg = candidate_study(base, point, run, source)
    folder = Path(study_dir)
    trace = _trace(cfg.trace.path, study_dir)
    profile = load_study_profile(cfg, trace, folder)
    try:
        scenario = build_scenario(cfg, trace, folder)
    except InputError as err:
        if err.source != "policy":  # the study's own problem: the command reports it
            raise
        return _unfit(point, err, goal, time.perf_counter() - t0)
    scores = _scores(scenario.policy, trace, exit_costs(study_costs(cfg, profile), 1))
    violations = goal.violations(scores["val_relative_accuracy"], scores["val_accuracy"],
                                 scores["cost_ms"])
    common = dict(point=point, violations=violations, **scores)
    if any(v > 0 for v in violations.values()):
        bad = ", ".join("--" + k.replace("_", "-") for k, v in violations.items() if v > 0)
        return Outcome(feasible=False, value=_worst(goal), reason=f"violates {bad} on val",
                       replicas=cfg.server.replicas, seconds=time.perf_counter() - t0, **common)
    runs = [cfg.run.model_copy(update={"seed": cfg.run.seed + i}) for i in range(seeds)]
    judged = _judge(scenario, runs, goal, rel_tol, start_rps)
    extra = _detail(scenario, runs[0], judged, trace, goal) if detail and judged["feasible"] \
        else {}
    return Outcome(feasible=judged["feasible"], value=judged["value"], reason=judged["reason"],
                   capacity_rps=judged.get("capacity_rps"),
                   capacity_ci95_rps=judged.get("capacity_ci95_rps"),
                   replicas=judged["replicas"], sim_requests=judged["sim_requests"] +
                   extra.pop("sim_requests", 0), seconds=time.perf_counter() - t0,
                   detail=extra, **common)


def _unfit(point: dict[str, Any], err: InputError, goal: Goal, seconds: float) -> Outcome:
    """A candidate whose policy cannot be fitted (e.g. a budget below the first exit's cost):
    infeasible, no scores."""
    reason = f"cannot fit: {err.field}: {err.problem}" if err.field else f"cannot fit: {err.problem}"
    return Outcome(point=point, feasible=False, value=_worst(goal), reason=reason,
                   violations={}, val_accuracy=None, val_relative_accuracy=None,
                   test_accuracy=None, test_relative_accuracy=None, cost_ms=None,
                   exit_fractions=[], seconds=seconds)


def _scores(policy: Any, trace: ExitTrace, costs: np.ndarray) -> dict[str, Any]:
    """Accuracy (absolute and relative to the full model) on val and test, the val average
    compute per sample at batch 1, and the test exit fractions."""
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        ids = trace.indices(split)
        exits = policy.exit_index(trace, ids)
        acc = float(trace.correct[ids, exits].mean())
        out[f"{split}_accuracy"] = acc
        out[f"{split}_relative_accuracy"] = acc / float(trace.correct[ids, -1].mean())
        if split == "val":
            out["cost_ms"] = average_cost(exits, costs)
        else:
            out["exit_fractions"] = [float((exits == k).mean()) for k in range(trace.n_exits)]
    return out


def _worst(goal: Goal) -> float:
    return float(goal.max_replicas + 1) if goal.objective is Objective.REPLICAS else 0.0


def _judge(scenario: Any, runs: list, goal: Goal, rel_tol: float, start_rps: float | None
           ) -> dict[str, Any]:
    """The objective at each seed: capacity, replicas needed, or whether the load holds."""
    if goal.objective is Objective.LOAD:
        caps, spent = [], 0
        for run in runs:
            res = search_capacity(scenario, run, goal.slo_ms, goal.attainment,
                                  rel_tol=rel_tol, start_rps=start_rps,
                                  step=1.25 if start_rps else 2.0)
            caps.append(res.capacity_rps)
            spent += simulated_requests(res, run)
        mean = float(np.mean(caps))
        return {"feasible": True, "value": mean, "capacity_rps": mean,
                "capacity_ci95_rps": _ci95(caps), "replicas": scenario.server.replicas,
                "sim_requests": spent, "reason": "", "capacities": caps}
    if goal.objective is Objective.REPLICAS:
        return _replicas_needed(scenario, runs, goal, rel_tol)
    spent, held = 0, True
    for run in runs:
        probe = holds_at(scenario, run, goal.load_rps, goal.slo_ms, goal.attainment)
        spent += probe.replications * probe_requests(run, goal.load_rps)
        held = held and probe.holds
    return {"feasible": held, "value": float(scenario_accuracy(scenario)) if held else 0.0,
            "replicas": scenario.server.replicas, "sim_requests": spent,
            "reason": "" if held else f"the SLO fails at {goal.load_rps:g} req/s"}


def scenario_accuracy(scenario: Any) -> float:
    """The fitted policy's val accuracy (what a search maximizes; test is reported)."""
    trace = scenario.trace
    ids = trace.indices("val")
    return float(trace.correct[ids, scenario.policy.exit_index(trace, ids)].mean())


def _replicas_needed(scenario: Any, runs: list, goal: Goal, rel_tol: float) -> dict[str, Any]:
    """The fewest replicas (<= max_replicas) at which the SLO holds at the load at every seed,
    starting from the load over one replica's capacity. The value is the replicas less half the
    spare capacity fraction (capped at 1), so of two configs on as many replicas the one with
    more headroom wins."""
    one = dataclasses.replace(scenario, server=scenario.server.model_copy(update={"replicas": 1}))
    res = search_capacity(one, runs[0], goal.slo_ms, goal.attainment, rel_tol=rel_tol)
    spent = simulated_requests(res, runs[0])
    per = res.capacity_rps
    r = max(1, min(goal.max_replicas, math.ceil(goal.load_rps / per)))

    def holds(n: int) -> bool:
        nonlocal spent
        sc = dataclasses.replace(scenario, server=scenario.server.model_copy(
            update={"replicas": n}))
        ok = True
        for run in runs:
            probe = holds_at(sc, run, goal.load_rps, goal.slo_ms, goal.attainment)
            spent += probe.replications * probe_requests(run, goal.load_rps)
            ok = ok and probe.holds
        return ok

    while not holds(r):
        if r >= goal.max_replicas:
            return {"feasible": False, "value": _worst(goal), "replicas": r,
                    "sim_requests": spent, "capacity_rps": per,
                    "reason": f"the SLO fails at {goal.load_rps:g} req/s on {r} replicas"}
        r += 1
    while r > 1 and holds(r - 1):
        r -= 1
    spare = min(1.0, max(0.0, r * per / goal.load_rps - 1.0))
    return {"feasible": True, "value": r - 0.5 * spare, "replicas": r, "capacity_rps": per,
            "sim_requests": spent, "reason": ""}


def _ci95(values: list[float]) -> float | None:
    """The capacity search's 95% t-interval half-width (None for one value)."""
    ci = capacity_ci(np.asarray(values, dtype=float))
    return None if math.isinf(ci) else ci


def _detail(scenario: Any, run: Any, judged: dict[str, Any], trace: ExitTrace, goal: Goal
            ) -> dict[str, Any]:
    """At the judged rate (the capacity, or the load): p99, mean batch size at the first
    stage, utilisation; and the test relative accuracy's 95% bootstrap CI."""
    rate = judged.get("capacity_rps") if goal.objective is Objective.LOAD else goal.load_rps
    replicas = judged["replicas"]
    sc = dataclasses.replace(scenario, workload=scenario.workload.at_rate(rate),
                             server=scenario.server.model_copy(update={"replicas": replicas}),
                             slo_ms=goal.slo_ms)
    result = simulate(sc, run, breakdown=False)  # latencies only
    s = result.summary
    ids = trace.indices("test")
    exits = scenario.policy.exit_index(trace, ids)
    lo, hi = relative_accuracy_ci(trace, ids, exits, seed=run.seed)
    return {"rate_rps": rate, "latency_p99_ms": s["latency_p99_ms"]["mean"],
            "latency_p50_ms": s["latency_p50_ms"]["mean"],
            "batch_size_stage_0": s["batch_size_stage_0"]["mean"],
            "utilisation": s["utilisation"]["mean"], "test_relative_accuracy_ci95": [lo, hi],
            "policy": scenario.policy.get_params(),
            "sim_requests": run.replications * probe_requests(run, rate)}


def relative_accuracy_ci(trace: ExitTrace, ids: np.ndarray, exits: np.ndarray, seed: int = 0
                         ) -> tuple[float, float]:
    """95% paired bootstrap interval of accuracy / full-model accuracy over the samples."""
    rng = np.random.default_rng(seed)
    got = trace.correct[ids, exits].astype(float)
    full = trace.correct[ids, -1].astype(float)
    draws = rng.integers(0, ids.size, size=(BOOTSTRAP, ids.size))
    rel = got[draws].mean(axis=1) / np.maximum(full[draws].mean(axis=1), 1e-12)
    lo, hi = np.percentile(rel, [2.5, 97.5])
    return float(lo), float(hi)
