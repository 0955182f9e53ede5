"""Run a study from its config and write the run folder.

The folder holds the resolved config, per-request results (Parquet), the summary (JSON) and a
plot. It is written in a temporary sibling folder and renamed into place at the end, so a
failed run leaves nothing half-written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from offramp.analysis.study.config import StudyConfig
from offramp.analysis.study.resolve import build_scenario, load_study_trace, resolve_workload
from offramp.common.machine import command_line
from offramp.common.outputs import output_dir
from offramp.sim.metrics import BETWEEN, between_ms, measured_mask, request_parts_ms
from offramp.sim.runner import StudyResult, simulate
from offramp.traces.format import ExitTrace


@dataclass
class StudyOutput:
    config: StudyConfig
    trace: ExitTrace
    result: StudyResult
    policy_params: dict[str, Any]
    costs: dict[str, Any]  # which cost model and calibration the stage times came from
    policy: Any = None  # the fitted policy itself


def run_study(cfg: StudyConfig, base: Path | None = None, progress=None,
              policy: Any = None) -> StudyOutput:
    """Load inputs, fit the policy on val (or take ``policy``, already fitted), simulate every
    replication."""
    cfg = resolve_workload(cfg, base)
    trace = load_study_trace(cfg, base)
    scenario = build_scenario(cfg, trace, base, policy)
    result = simulate(scenario, cfg.run, progress)
    return StudyOutput(cfg, trace, result, scenario.policy.get_params(), scenario.service.costs,
                       scenario.policy)


def requests_frame(out: StudyOutput) -> pd.DataFrame:
    """Per-request results of every replication, one row per request."""
    frames = []
    trace = out.trace
    for rep, rec in enumerate(out.result.records):
        # service_ms by stage kind (segment_ms, head_ms, ..., overhead_ms: they add up to it).
        parts = {f"{kind}_ms": ms for kind, ms in (request_parts_ms(rec) or {}).items()}
        if (between := between_ms(rec)) is not None:  # rebatch: waiting between stages
            parts[f"{BETWEEN}_ms"] = between
        frames.append(pd.DataFrame({
            "replication": rep,
            "request_id": np.arange(rec.arrival.size),
            "sample_id": rec.sample,
            "arrival_s": rec.arrival,
            "dispatch_s": rec.dispatch,
            "finish_s": rec.finish,
            "latency_ms": (rec.finish - rec.arrival) * 1000.0,
            # The breakdown: queueing until the batch is dispatched, then in service until
            # the request's exit (queue_ms + service_ms = latency_ms).
            "queue_ms": (rec.dispatch - rec.arrival) * 1000.0,
            "service_ms": (rec.finish - rec.dispatch) * 1000.0,
            **parts,
            "exit_index": rec.exit,
            "correct": trace.correct[rec.sample, rec.exit],
            "agree": trace.agree[rec.sample, rec.exit],
            "replica": rec.replica,
            "batch_id": rec.batch,
            "warmup": ~measured_mask(rec, out.config.run.warmup_fraction),
        }))
    return pd.concat(frames, ignore_index=True)


def summary_doc(out: StudyOutput) -> dict[str, Any]:
    """The run's summary as strict JSON (NaN, e.g. a CI from one replication, becomes null)."""
    doc = {
        "model_id": out.trace.model_id,
        "engine": out.result.engine,
        "replications": len(out.result.runs),
        "policy": out.policy_params,
        "stage_costs": out.costs,
        "metrics": {k: {"mean": v["mean"], "ci95": v["ci95"]} for k, v in out.result.summary.items()},
        "per_replication": out.result.runs,
        "policy_history": out.result.policy_history,
    }
    return _finite(doc)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


RUN_OUTPUTS = ("config.resolved.yaml", "requests.parquet", "summary.json", "latency.png",
               "report.html")


def write_run(out: StudyOutput, dest: Path) -> Path:
    """Write the run folder atomically (temp folder, then rename)."""
    from offramp.analysis.report.plots import plot_run

    dest = Path(dest)
    with output_dir(dest, RUN_OUTPUTS, "run folder") as tmp:
        resolved = out.config.model_dump(mode="json")
        resolved["policy"]["fitted"] = out.policy_params
        (tmp / "config.resolved.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        frame = requests_frame(out)
        frame.to_parquet(tmp / "requests.parquet", index=False)
        doc = {**summary_doc(out), "command": command_line()}
        (tmp / "summary.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
        plot_run(frame, out.trace.n_exits, out.config.slo.latency_ms, tmp / "latency.png")
    return dest
