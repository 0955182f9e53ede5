"""Fit one policy on a study's val split and report it on val and test (``offramp fit``)."""

from __future__ import annotations

from typing import Any

from offramp.analysis.study.config import StudyConfig
from offramp.analysis.study.resolve import fit_policy, study_costs
from offramp.policies.base import plain
from offramp.policies.costs import average_cost, exit_costs
from offramp.policies.table import ExitTable
from offramp.profiling.format import LatencyProfile
from offramp.traces.format import ExitTrace


def fit_and_report(cfg: StudyConfig, trace: ExitTrace, profile: LatencyProfile,
                   cost_batch: int = 1) -> tuple[ExitTable, dict[str, Any]]:
    """The fitted policy as its per-sample exit table, and its val/test report: accuracy,
    relative accuracy, agreement, average cost (at ``cost_batch``) and exit fractions."""
    fitted = fit_policy(cfg, trace, profile)
    table = ExitTable.from_policy(fitted, trace)
    costs = exit_costs(study_costs(cfg, profile), cost_batch)
    report: dict[str, Any] = {"trace": trace.model_id, "profile": profile.source,
                              "cost_batch": cost_batch, "costs_ms": costs.tolist()}
    for split in ("val", "test"):
        ids = trace.indices(split)
        exits = table.exits[ids]
        acc = float(trace.correct[ids, exits].mean())
        report[split] = {"accuracy": acc,
                         "relative_accuracy": acc / float(trace.correct[ids, -1].mean()),
                         "agreement": float(trace.agree[ids, exits].mean()),
                         "average_cost_ms": average_cost(exits, costs),
                         "exit_fractions": [float((exits == k).mean())
                                            for k in range(trace.n_exits)]}
    if hasattr(fitted, "report_"):
        report["policy_report"] = plain(fitted.report_, finite=True)  # strict JSON: "inf"
    if fitted.explain():
        report["why"] = fitted.explain()
    return table, report
