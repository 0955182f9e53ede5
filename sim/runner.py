"""Run a serving study: build each replication's plan, pick an engine, collect results.

Randomness: one ``SeedSequence(seed)`` spawns an independent child per replication, and each
child spawns named streams (arrivals, samples, routing, think times, one noise stream per
replica), so the same config and seed give identical results, in any process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from offramp.policies.base import ExitPolicy
from offramp.traces.format import ExitTrace

from .config import RunConfig, ServerConfig, WorkloadConfig
from .fast import run_fast, supports
from .metrics import combine, summarize_run
from .plan import Plan, RunRecords
from .reference import run_reference
from .service import NoiseStream, ServiceTimes
from .workload import open_loop_arrivals, replay_arrivals, route_static


def make_plan(trace: ExitTrace, policy: ExitPolicy, service: ServiceTimes,
              server: ServerConfig, workload: WorkloadConfig, run: RunConfig,
              seed: np.random.SeedSequence) -> Plan:
    """Draw one replication's workload from its own seed."""
    s_arr, s_smp, s_route, s_think, s_noise = seed.spawn(5)
    rng_arr, rng_smp = np.random.default_rng(s_arr), np.random.default_rng(s_smp)
    noise = [NoiseStream(np.random.default_rng(s), service.width, service.dist)
             for s in s_noise.spawn(server.replicas)]
    test_ids = trace.indices("test")
    plan = Plan(trace=trace, policy=policy, service=service, server=server, workload=workload,
                noise=noise, route_rng=np.random.default_rng(s_route), test_ids=test_ids)
    if workload.kind == "closed":
        plan.think_rng, plan.sample_rng = np.random.default_rng(s_think), rng_smp
        plan.max_requests, plan.duration_s = run.requests, run.duration_s
        return plan
    if workload.kind == "replay":
        plan.arrivals, plan.samples = replay_arrivals(workload, test_ids, rng_smp, run.requests,
                                                      run.duration_s)
    else:
        plan.arrivals = open_loop_arrivals(workload, rng_arr, run.requests, run.duration_s)
        plan.samples = rng_smp.choice(test_ids, plan.arrivals.size)
    if server.routing in ("round_robin", "random") and server.replicas > 1:
        plan.routes = route_static(server.routing, plan.arrivals.size, server.replicas,
                                   plan.route_rng)
    return plan


def run_plan(plan: Plan, engine: str = "auto") -> tuple[RunRecords, str]:
    """Run one plan; ``auto`` takes the fast engine where it applies. Returns (records, engine)."""
    reason = supports(plan)
    if engine == "fast" and reason:
        raise ValueError(f"run.engine is 'fast' but {reason}; use 'auto' or 'reference'")
    if engine == "reference" or (engine == "auto" and reason):
        return run_reference(plan), "reference"
    return run_fast(plan), "fast"


@dataclass
class StudyResult:
    """All replications of a study: records, per-run metrics, combined summary."""

    records: list[RunRecords]
    runs: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]
    engine: str
    policy_history: list[Any]  # per replication, what a stateful policy did (else empty)


def simulate(trace: ExitTrace, policy: ExitPolicy, service: ServiceTimes, server: ServerConfig,
             workload: WorkloadConfig, run: RunConfig, slo_ms: float | None = None,
             progress=None) -> StudyResult:
    """Run ``run.replications`` independent replications and summarise them with 95% CIs."""
    records, runs, history, engine = [], [], [], "fast"
    for i, seed in enumerate(np.random.SeedSequence(run.seed).spawn(run.replications)):
        plan = make_plan(trace, policy, service, server, workload, run, seed)
        rec, engine = run_plan(plan, run.engine)
        records.append(rec)
        runs.append(summarize_run(rec, trace, run.warmup_fraction, slo_ms, server.replicas))
        if hasattr(policy, "history_"):
            history.append(list(policy.history_))
        if progress is not None:
            progress(i + 1)
    return StudyResult(records=records, runs=runs, summary=combine(runs), engine=engine,
                       policy_history=history)
