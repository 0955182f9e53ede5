"""``offramp profile calibrate``: fit a profile's served-cost model on the real serving loop.

The validate machinery serves short streams of the real model (``offramp validate``'s plan,
real side and served streams) at a few busy fractions and exit modes; every stream's own
per-stage timings fit one served-cost table (:func:`offramp.profiling.served.fit_served_costs`,
pooled over every load and mode: one load-independent model), which is stored in the profile
(``meta.served_costs``) with what it was fitted on. Studies on the calibrated profile then
predict with it by default (``profile.costs: served``).
"""

from __future__ import annotations

import datetime
import platform
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from offramp.analysis.study.config import parse_config
from offramp.analysis.study.resolve import load_study_trace
from offramp.common.errors import InputError
from offramp.core.plan import ValidationPlan
from offramp.profiling.format import LatencyProfile, save_profile
from offramp.profiling.shipped import resolve_profile


def calibrate_profile(profile: str, output: Path, device: str = "cpu",
                      loads: tuple[float, ...] = (0.3, 0.6, 0.9),
                      modes: tuple[str, ...] = ("keep", "shrink"), requests: int = 3000,
                      served_seconds: float = 3.0, max_batch: int = 32, max_wait_ms: float = 2.0,
                      trace: str | None = None, policy: dict[str, Any] | None = None,
                      keep: Path | None = None, own: dict[str, Any] | None = None,
                      log: Callable[..., None] = print, checkpoint: str | None = None,
                      relevel: bool = False) -> LatencyProfile:
    """Serve the real loop, fit, and write the calibrated profile to ``output``
    (``checkpoint``: the real model's weights, default the shipped ones). ``relevel``: keep
    the profile's served table and move its levels to the streams served now
    (:func:`offramp.profiling.served_level.relevel`)."""
    from offramp.analysis.validation.compare import read_real_side, served_profile
    from offramp.analysis.validation.prepare import prepare
    from offramp.analysis.validation.served import served_runs
    from offramp.profiling.served_level import relevel as relevel_table
    from offramp.profiling.validate_real import run_plan

    if not all(0 < u < 1 for u in loads):
        raise InputError("--loads", None, "busy fractions must be in (0, 1)", "e.g. 0.3,0.6,0.9")
    checkpoint = checked_checkpoint(checkpoint, own)
    base = resolve_profile(profile)
    if relevel and not base.meta.get("served_costs"):
        raise InputError(base.source, "meta.served_costs", "holds no served table to re-level",
                         "calibrate it first (offramp profile calibrate without --relevel)")
    study = parse_config({"trace": {"path": trace or base.meta["model_id"]},
                          "profile": {"path": str(base.source)},
                          "server": {"max_batch": max_batch, "max_wait_ms": max_wait_ms},
                          "policy": policy or {"name": "entropy", "tolerance_pct": 99}},
                         "profile calibrate")
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="offramp-calibrate-"))
    try:
        prepare(study, Path.cwd(), work, device, list(modes),
                [{"utilisation": u} for u in loads], 1, requests,
                profile_given=Path(str(base.source)), own=own, served_requests=requests // 2,
                served_seconds=served_seconds, checkpoint=checkpoint)
        run_plan(work, log=log)
        trace_obj = load_study_trace(study, Path.cwd())
        plan, manifest = read_real_side(work)
        # Every stream the loop served (served streams and repeats) feeds the one table.
        pooled = {**manifest, "served": manifest.get("served", []) + manifest["runs"]}
        if relevel:
            served = relevel_table(base.meta["served_costs"],
                                   served_runs(work, pooled["served"], trace_obj),
                                   [s["file"] for s in pooled["served"]],
                                   _provenance(plan, manifest, requests))
        else:
            served = dict(served_profile(work, base, pooled, trace_obj).meta["served_costs"])
            served["fitted_on"] = _provenance(plan, manifest, requests)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    meta = {**base.meta, "served_costs": served}
    out = LatencyProfile(rows=base.rows, meta=meta, source=str(output))
    save_profile(out, output)
    return out


def checked_checkpoint(checkpoint: str | None, own: dict[str, Any] | None) -> str | None:
    """The real model's weights as an absolute path (the provenance keeps where they were);
    one error where the file is missing or your own model is given too."""
    if checkpoint is None:
        return None
    if own:
        raise InputError("--checkpoint", checkpoint, "weights of a shipped model, but "
                         "--model-factory gives your own", "drop one of the two")
    if not Path(checkpoint).is_file():
        raise InputError("--checkpoint", checkpoint, "no such file",
                         "give the checkpoint's path (offramp traces train -o writes one)")
    return str(Path(checkpoint).resolve())


def _provenance(plan: ValidationPlan, manifest: dict[str, Any], requests: int) -> dict[str, Any]:
    """What a calibration was fitted on: loads (target and real busy), modes, batching,
    stream lengths, device, machine, software, date."""
    import numpy as np
    import torch

    busy = {}
    for run in manifest["runs"]:
        busy.setdefault(run["key"], []).append(run.get("busy_fraction"))
    return {"loads": [x.get("utilisation") for x in plan.loads],
            "busy": {key: round(float(np.median(v)), 4) for key, v in busy.items()
                     if all(isinstance(b, float) for b in v)},
            "modes": [m.value for m in plan.modes], "max_batch": plan.max_batch,
            "max_wait_ms": plan.max_wait_ms, "requests_per_stream": requests,
            "streams": len(manifest["runs"]) + len(manifest.get("served", [])),
            "device": plan.device, "checkpoint": plan.checkpoint,
            "machine": manifest.get("machine"),
            "software": {"python": platform.python_version(), "torch": torch.__version__},
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": plan.command}
