"""The Python twins of the study commands that compare many runs: ``offramp concurrency``,
``offramp pipeline``, ``offramp frontier`` and ``offramp demo``. Each calls the function its
command calls (docs/api.md)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .twins import Study, load_study


def concurrency(study: Study | str | Path, clients: str | Sequence[int] = "1-64:x2",
                think_ms: float = 0.0) -> pd.DataFrame:
    """``offramp concurrency``: the study served by N closed-loop clients for each N (``clients``
    as the command takes it, e.g. ``"1-64:x2"``, or a list): one row per N with throughput and
    latency percentiles (means and 95% CIs over the study's replications)."""
    from offramp.analysis.studies.concurrency import concurrency_sweep, parse_clients

    study = load_study(study)
    counts = parse_clients(clients) if isinstance(clients, str) else [int(n) for n in clients]
    return concurrency_sweep(study.config, study.base, counts, think_ms)


def pipeline(study: Study | str | Path, gpus: Sequence[int] = (2, 4)) -> list[dict[str, Any]]:
    """``offramp pipeline``: for each GPU count, E3's split of the study's segments over GPUs
    (in proportion to each group's work), its bound and the ``--set`` that serves it."""
    from offramp.analysis.studies.pipeline_split import pipeline_splits

    study = load_study(study)
    return pipeline_splits(study.config, study.base, [int(g) for g in gpus])


@dataclasses.dataclass(frozen=True)
class Frontier:
    """``offramp frontier``: every policy family's (test accuracy, cost) points, the oracle
    bounds, and at each budget the learned policies against the best heuristic."""

    points: pd.DataFrame
    bound: pd.DataFrame
    comparison: pd.DataFrame


def frontier(trace: str | Path, profile: str | Path, out: str | Path | None = None,
             max_batch: int = 32, exit_mode: str = "shrink", cost_batch: int = 1,
             eenet_fits: int | None = None, eenet_epochs: int | None = None,
             costs: str | None = None, progress: Callable[[], None] | None = None) -> Frontier:
    """Fit every policy family on the trace's val split and place it by test accuracy and cost
    (``costs``: which calibration of the profile; default its most calibrated). ``out``: also
    write the command's CSVs and plot there. EENet as published fits 10 × 1000 epochs per
    budget (minutes); ``eenet_fits`` / ``eenet_epochs`` cut that for a quick look."""
    from offramp.analysis.studies.frontier import compute_frontier, write_frontier
    from offramp.analysis.study.resolve import load_study_profile, load_study_trace

    study = load_study({"trace": {"path": str(trace)},
                        "profile": {"path": str(profile), **({"costs": costs} if costs else {})},
                        "server": {"max_batch": max_batch, "exit_mode": exit_mode}})
    cfg = study.config
    trace_obj = load_study_trace(cfg, study.base)
    profile_obj = load_study_profile(cfg, trace_obj, study.base)
    points, bound, comparison = compute_frontier(
        trace_obj, profile_obj, cfg.server, cost_batch, eenet_fits, eenet_epochs,
        progress=progress, costs=cfg.profile.costs)
    if out is not None:
        write_frontier(trace_obj, profile_obj, points, bound, comparison, Path(out))
    return Frontier(points, bound, comparison)


def demo(out: str | Path = "offramp-demo", requests: int = 20_000, replications: int = 3,
         max_batch: int = 32, seed: int = 0, modes: Sequence[str] = ("keep", "shrink")
         ) -> dict[str, dict[str, Any]]:
    """``offramp demo``: every shipped model with its shipped profile — the policy table,
    capacities, a load sweep and the page — written to ``out``; returns each model's results
    (tables as DataFrames)."""
    from offramp.analysis.cli.options import exit_modes
    from offramp.analysis.report.html import demo_report
    from offramp.analysis.studies.demo import DEMO_OUTPUTS, demo_pairs, run_demo_model
    from offramp.common.machine import command_line
    from offramp.common.outputs import output_dir

    modes = tuple(m for m in exit_modes(",".join(modes), "modes") if m != "none")
    results = {}
    with output_dir(Path(out), DEMO_OUTPUTS, "demo folder") as tmp:
        for trace_name, profile_name in demo_pairs():
            results[trace_name] = run_demo_model(trace_name, profile_name, tmp, max_batch,
                                                 requests, replications, seed,
                                                 modes=modes)
        (tmp / "report.html").write_text(demo_report(tmp, results, command_line()),
                                         encoding="utf-8")
    return results
