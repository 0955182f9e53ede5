"""The summary table printed after a run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROWS = [
    ("throughput_rps", "throughput", "req/s", 1),
    ("goodput_rps", "goodput (within SLO)", "req/s", 1),
    ("slo_attainment", "SLO attainment", "", 4),
    ("latency_mean_ms", "latency mean", "ms", 3),
    ("latency_p50_ms", "latency p50", "ms", 3),
    ("latency_p90_ms", "latency p90", "ms", 3),
    ("latency_p95_ms", "latency p95", "ms", 3),
    ("latency_p99_ms", "latency p99", "ms", 3),
    ("latency_p99.9_ms", "latency p99.9", "ms", 3),
    ("latency_max_ms", "latency max", "ms", 3),
    ("wait_mean_ms", "  queueing (before dispatch) mean", "ms", 3),
    ("wait_p50_ms", "  queueing p50", "ms", 3),
    ("wait_p99_ms", "  queueing p99", "ms", 3),
    ("in_service_mean_ms", "  in service (dispatch to exit) mean", "ms", 3),
    ("in_service_p50_ms", "  in service p50", "ms", 3),
    ("in_service_p99_ms", "  in service p99", "ms", 3),
    ("accuracy", "accuracy", "", 4),
    ("full_model_accuracy", "full-model accuracy (same requests)", "", 4),
    ("agreement", "agreement with full model", "", 4),
    ("utilisation", "busy fraction of the replicas (device time)", "", 3),
    ("batch_time_mean_ms", "batch service time mean", "ms", 3),
    ("batch_time_p99_ms", "batch service time p99", "ms", 3),
]


def _fmt(v: float, digits: int) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def summary_table(summary: dict[str, Any], title: str, device: str | None = None) -> Table:
    """Rows of mean ± 95% CI half-width for the headline metrics; ``device``: what the
    profile was measured on, named in the busy-fraction row."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("± 95% CI", justify="right")
    table.add_column("unit")
    keys = [r for r in ROWS if r[0] in summary]
    k_exits = sum(1 for k in summary if k.startswith("exit_fraction_"))
    keys += [(f"exit_fraction_{k}", f"exits at {k}", "", 4) for k in range(k_exits)]
    keys += [(f"batch_size_stage_{k}", f"mean batch size, stage {k}", "", 2) for k in range(k_exits)]
    for key, label, unit, digits in keys:
        m = summary[key]
        if key == "utilisation" and device:
            label = f"busy fraction of the replicas ({device} time)"
        table.add_row(label, _fmt(m["mean"], digits), _fmt(m["ci95"], digits), unit)
    return table


def print_summary(summary: dict[str, Any], title: str, console: Console | None = None,
                  device: str | None = None) -> None:
    (console or Console()).print(summary_table(summary, title, device))


def costs_line(costs: dict[str, Any] | None) -> str:
    """One line saying which cost model and calibration a prediction used."""
    if not costs:
        return "stage costs: not recorded"
    if costs.get("model") == "analytic":
        return f"stage costs: analytic ({costs.get('kind')}, {costs.get('mean_ms')} ms a batch)"
    where = Path(str(costs.get("profile", "?"))).name
    line = f"stage costs: {costs.get('model')} calibration of {where}"
    if costs.get("device") or costs.get("measured"):
        line += f" ({costs.get('device') or '?'}, measured {str(costs.get('measured') or '?')[:10]}"
        fitted = (costs.get("calibration") or {}).get("fitted_on") or {}
        if fitted.get("date"):
            other = costs.get("machine") not in (None, costs.get("device"))
            line += (f", calibrated {str(fitted['date'])[:10]}"
                     f"{' on ' + str(costs['machine']) if other else ''} at loads "
                     f"{fitted.get('loads')}")
        moved = (costs.get("calibration") or {}).get("relevelled") or {}
        if moved.get("date"):
            line += f", re-levelled {str(moved['date'])[:10]} at loads {moved.get('loads')}"
        line += ")"
    if costs.get("noisy_stages"):
        line += ("; too noisy to trust (p99 > 5x p50): " + "; ".join(costs["noisy_stages"][:3])
                 + (" ..." if len(costs["noisy_stages"]) > 3 else ""))
    return line

