"""Run a grid of study variants (policies × exit modes × loads) and collect one row each."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from offramp.analysis.study.config import StudyConfig, parse_config
from offramp.analysis.study.overrides import apply_fields
from offramp.analysis.study.resolve import build_scenario, build_service, load_study_profile, load_study_trace
from offramp.core import execution as stages
from offramp.core.modes import ExitMode
from offramp.sim.runner import simulate
from offramp.traces.format import ExitTrace

HEADLINE = ["throughput_rps", "latency_p50_ms", "latency_p99_ms", "accuracy", "agreement",
            "utilisation", "slo_attainment", "batch_size_stage_0"]


def full_batch_capacity_rps(cfg: StudyConfig, trace: ExitTrace, base: Path | None = None) -> float:
    """Requests/s one replica serves with full batches and no early exit (the p50 profile)."""
    no_exit = cfg.model_copy(update={"server": cfg.server.model_copy(update={"exit_mode": ExitMode.NONE})})
    svc = build_service(no_exit, trace, load_study_profile(no_exit, trace, base))
    b = cfg.server.max_batch
    return b / svc.plan_s(stages.no_exit(b, trace.n_exits)) * cfg.server.replicas


def run_grid(base_cfg: StudyConfig, variants: Iterable[dict[str, dict[str, Any]]],
             base: Path | None = None, progress: Callable[[], None] | None = None,
             metrics: Iterable[str] = HEADLINE) -> pd.DataFrame:
    """Simulate each variant (section -> field overrides) and return one row per variant
    (``metrics``: each one's mean and 95% CI)."""
    trace = load_study_trace(base_cfg, base)
    rows = []
    for variant in variants:
        fields = {f"{section}.{name}": value for section, given in variant.items()
                  for name, value in given.items()}
        cfg = parse_config(apply_fields(base_cfg.model_dump(mode="json", exclude_unset=True),
                                        fields, "variant"), "variant")
        res = simulate(build_scenario(cfg, trace, base), cfg.run)
        row: dict[str, Any] = {"model": trace.model_id, "policy": cfg.policy.name,
                               "policy_fit": _fit_label(cfg), "exit_mode": cfg.server.exit_mode.value,
                               "rate_rps": cfg.workload.rate_rps, "engine": res.engine}
        for key in metrics:
            if key in res.summary:
                row[key] = res.summary[key]["mean"]
                row[key + "_ci95"] = res.summary[key]["ci95"]
        rows.append(row)
        if progress is not None:
            progress()
    return pd.DataFrame(rows)


def _fit_label(cfg: StudyConfig) -> str:
    p = cfg.policy
    if getattr(p, "tolerance_pct", None) is not None:
        return f"τ={p.tolerance_pct:g}%"
    if getattr(p, "fractions", None) is not None:
        return "fractions"
    if getattr(p, "thresholds", None) is not None:
        return "thresholds"
    return ""
