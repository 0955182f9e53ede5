"""Run a scenario: draw each replication, pick an engine, collect and summarise the results.

Randomness: one ``SeedSequence(run.seed)`` spawns an independent child per replication
(:func:`offramp.sim.scenario.draw_replication` splits it further), so the same scenario, run
config and seed give identical results, in any process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from offramp.common.errors import InputError

from .config import RunConfig
from .fast import run_fast, supports
from .metrics import combine, measured_mask, summarize_run
from .records import RunRecords
from .reference import run_reference
from .scenario import Replication, Scenario, draw_replication


def run_replication(scenario: Scenario, rep: Replication, engine: str = "auto",
                    breakdown: bool = True) -> tuple[RunRecords, str]:
    """Run one replication; ``auto`` takes the fast engine where it applies; ``breakdown``:
    record each request's time by stage kind (the reference engine always does).

    Returns (records, the engine used).
    """
    reason = supports(scenario)
    if engine == "fast" and reason:
        raise InputError("run", "engine", f"'fast' does not serve this study: {reason}",
                         "use engine: auto or reference")
    if engine == "reference" or (engine == "auto" and reason):
        return run_reference(scenario, rep), "reference"
    return run_fast(scenario, rep, breakdown), "fast"


@dataclass
class StudyResult:
    """All replications of a study: records, per-run metrics, combined summary."""

    records: list[RunRecords]
    runs: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]
    engine: str
    policy_history: list[Any]  # per replication, what a stateful policy's controller did


def simulate(scenario: Scenario, run: RunConfig, progress=None, breakdown: bool = True
             ) -> StudyResult:
    """Run ``run.replications`` independent replications and summarise them with 95% CIs;
    ``breakdown=False`` (searches) skips the per-request time by stage kind."""
    records, runs, history, engine = [], [], [], "fast"
    srv = scenario.server
    for i, seed in enumerate(np.random.SeedSequence(run.seed).spawn(run.replications)):
        rep = draw_replication(scenario, run, seed)
        rec, engine = run_replication(scenario, rep, run.engine, breakdown)
        records.append(rec)
        if not measured_mask(rec, run.warmup_fraction).any():
            field = "duration_s" if run.duration_s is not None else "warmup_fraction"
            raise InputError("run", field, f"replication {i + 1} has no request left to measure "
                             f"after warm-up ({rec.arrival.size} arrived)",
                             "run longer (run.duration_s or run.requests) or lower "
                             "run.warmup_fraction")
        runs.append(summarize_run(rec, scenario.trace, run.warmup_fraction, scenario.slo_ms,
                                  srv.replicas))
        if rep.controller is not None:
            history.append(list(rep.controller.history))
        if progress is not None:
            progress(i + 1)
    return StudyResult(records=records, runs=runs, summary=combine(runs), engine=engine,
                       policy_history=history)
