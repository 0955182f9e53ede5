"""Validate's simulated side as a plain study: what is validated is what users run.

For each (mode, load) of a validation folder, the simulated side is the study a user would
write: the folder's calibrated profile (``served-profile-L*.json``, or the profiler's), the
real stream's arrivals replayed, the plan's server and seed. :func:`sim_study` writes that
mapping; ``offramp validate`` builds its stage tables and workload from it with the same
functions as ``offramp simulate`` (:func:`offramp.analysis.study.resolve.build_service`), and saves
it as ``sim-study-KEY.yaml``, so ``offramp simulate`` on it gives validate's simulated side to
the request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from offramp.analysis.study.config import StudyConfig, parse_config
from offramp.analysis.study.resolve import build_scenario
from offramp.common.atomic import atomic_path
from offramp.core.modes import CostModel, ExitMode
from offramp.core.plan import ValidationPlan
from offramp.sim.scenario import Scenario
from offramp.traces.format import ExitTrace


def sim_study(trace: ExitTrace, plan: ValidationPlan, mode: ExitMode, profile_path: Path,
              costs: CostModel | None, arrivals: Path, requests: int, replications: int,
              policy: dict[str, Any]) -> dict[str, Any]:
    """The study mapping of one (mode, load): paths absolute, the run as validate simulates it."""
    return {"trace": {"path": str(Path(trace.source).resolve())},
            "profile": {"path": str(profile_path.resolve()), "latency": "sampled",
                        **({"costs": costs.value} if costs is not None else {})},
            "workload": {"kind": "replay", "path": str(arrivals.resolve())},
            "server": {"max_batch": plan.max_batch, "max_wait_ms": plan.max_wait_ms,
                       "exit_mode": mode.value,
                       **({"discipline": plan.discipline.value,
                           "stage_max_wait_ms": plan.stage_max_wait_ms}
                          if mode.rebatches else {})},
            "policy": policy,
            "run": {"requests": requests, "replications": replications,
                    "warmup_fraction": plan.warmup_fraction, "seed": plan.seed}}


def sim_scenario(study: dict[str, Any], trace: ExitTrace, policy) -> tuple[StudyConfig, Scenario]:
    """The study's scenario, built as every command builds it, with the already fitted
    ``policy`` (the one the real side served)."""
    cfg = parse_config(study, "validate's simulated side")
    return cfg, build_scenario(cfg, trace, None, policy)


def write_sim_study(study: dict[str, Any], path: Path) -> None:
    """Save the study a user runs to reproduce validate's simulated side."""
    with atomic_path(path) as tmp:
        tmp.write_text("# validate's simulated side for one (mode, load): offramp simulate "
                       f"{path.name} -o OUT\n" + yaml.safe_dump(study, sort_keys=False))
