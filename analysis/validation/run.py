"""``validate`` as two calls the command and the Python API share: serve the plan for real
(:func:`serve_real`), then simulate the same arrivals and judge (:func:`judge_folder`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from offramp.analysis.study.config import StudyConfig


def serve_real(cfg: StudyConfig, base: Path | None, out: Path, device: str, modes: Sequence[str],
               loads: list[dict[str, float]], repeats: int, requests: int,
               log: Callable[..., None] = print, **plan: Any) -> Path:
    """Write the plan folder ``out`` (``plan``: the other settings of
    :func:`offramp.analysis.validation.prepare.prepare`) and run it on the real loop."""
    from offramp.analysis.validation.prepare import prepare
    from offramp.profiling.validate_real import run_plan

    prepare(cfg, base, out, device, list(modes), loads, repeats, requests, **plan)
    run_plan(out, log=log)
    return out


def judge_folder(cfg: StudyConfig, base: Path | None, folder: Path, sim_replications: int = 5,
                 isolated_stages: bool = False, profiler_costs: bool = False,
                 pooled_served: bool = False,
                 calibrate_on: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Simulate every cell of a folder's real runs with the study's policy (fitted on val) and
    judge it (:func:`offramp.analysis.validation.compare.compare`; writes the folder's results)."""
    from offramp.analysis.study.resolve import fit_policy, load_study_profile, load_study_trace
    from offramp.analysis.validation.compare import compare

    trace = load_study_trace(cfg, base)
    policy = fit_policy(cfg, trace, load_study_profile(cfg, trace, base), base)
    section = cfg.policy.model_dump(mode="json", exclude_unset=True)
    if section.get("from_file") and base is not None:
        section["from_file"] = str((base / section["from_file"]).resolve())
    return compare(folder, trace, policy, sim_replications, not isolated_stages,
                   served=not profiler_costs, by_load=not pooled_served,
                   policy_section=section, calibrate_on=calibrate_on or None)
