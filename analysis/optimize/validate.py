"""``optimize --validate``: the winner's and the no-exit baseline's capacity at the SLO measured
on the real serving loop of this machine (:mod:`offramp.analysis.validation.real_capacity`),
beside the simulator's prediction: does the ordering agree, and is each prediction within the
real spread (or 5%)?"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from offramp.analysis.optimize.evaluate import Outcome, candidate_study
from offramp.analysis.optimize.goal import Goal, Objective
from offramp.analysis.optimize.output import NO_EXITS, describe
from offramp.analysis.optimize.run import Result
from offramp.analysis.study.config import parse_config
from offramp.analysis.study.resolve import load_study_trace
from offramp.analysis.validation.real_capacity import measure_capacity
from offramp.common.atomic import atomic_path
from offramp.common.errors import InputError

TOLERANCE = 0.05


def check_validate(goal: Goal) -> None:
    """``--validate`` measures a capacity: one error unless the goal maximizes the load."""
    if goal.objective is not Objective.LOAD:
        raise InputError("--validate", None, "measures the capacity: it needs --maximize load",
                         "drop --validate, or optimize the load")


def validate_choice(result: Result, folder: Path, device: str = "cpu", repeats: int = 3,
                    requests: int = 6000, core: int | None = None,
                    log: Callable[[str], None] = print, checkpoint: str | None = None
                    ) -> dict[str, Any]:
    """Measure both capacities for real; write ``folder/validation.json`` and return it.
    ``checkpoint``: the real model's weights (default: the shipped ones)."""
    check_validate(result.goal)
    base_dir = Path(result.study).parent
    base = result.base
    trace = load_study_trace(parse_config(base, result.named), base_dir)
    picks: list[tuple[str, Outcome]] = [("optimizer's choice", result.winner)]
    if NO_EXITS in result.baselines:
        picks.append((NO_EXITS, result.baselines[NO_EXITS]))
    rows = []
    for i, (label, o) in enumerate(picks):
        cfg = candidate_study(base, o.point, {}, result.named)
        log(f"serving {label} for real around {o.value:.4g} req/s")
        got = measure_capacity(cfg, base_dir, folder / f"validate-{i}", trace, o.value,
                               result.goal.slo_ms, result.goal.attainment, repeats=repeats,
                               requests=requests, device=device, core=core, log=log,
                               checkpoint=checkpoint)
        lo, hi = got["spread_rps"]
        measured = got["capacity_rps"]
        within = lo <= o.value <= hi or abs(o.value - measured) <= TOLERANCE * measured
        rows.append({"label": label, "config": describe(o.point), "predicted_rps": o.value,
                     "predicted_ci95_rps": o.capacity_ci95_rps, "measured_rps": measured,
                     "measured_spread_rps": [lo, hi], "error": o.value / measured - 1.0,
                     "within": bool(within), "folder": str(folder / f"validate-{i}"),
                     "censored": [r["censored"] for r in got["per_repeat"]]})
    doc = {"device": device, "repeats": repeats, "requests": requests, "checkpoint": checkpoint,
           "rows": rows,
           "ordering_agrees": None if len(rows) < 2 else
           (rows[0]["predicted_rps"] > rows[1]["predicted_rps"]) ==
           (rows[0]["measured_rps"] > rows[1]["measured_rps"])}
    with atomic_path(folder / "validation.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    return doc
