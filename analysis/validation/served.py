"""Served-cost profiles of a validation folder: one table per load, one pooled, or one fitted on
the operating points ``--calibrate-on`` names (every other cell is then held out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from offramp.analysis.validation.io import read_run
from offramp.common.errors import InputError
from offramp.core.modes import CostModel
from offramp.core.plan import ValidationPlan
from offramp.profiling.format import LatencyProfile
from offramp.profiling.latency import LatencyModel
from offramp.traces.format import ExitTrace


def served_profile(plan_dir: Path, profile: LatencyProfile, manifest: dict[str, Any],
                   trace: ExitTrace, load: int | None = None) -> LatencyProfile:
    """The in-loop profile with ``served_costs`` fitted on the folder's served streams
    (``real/served-*.npz``: each mode and load served on arrivals of its own next to every
    repeat; :func:`offramp.profiling.served.fit_served_costs`): those of load index ``load``
    only, or of every load (None). Written beside the runs as ``served-profile-L{load}.json``
    or ``served-profile.json``, a profile ``simulate`` takes too."""
    from offramp.profiling.format import save_profile
    from offramp.profiling.served import fit_served_costs

    streams = [s for s in manifest["served"] if load is None or s.get("load") == load]
    runs = served_runs(plan_dir, streams, trace)
    base = LatencyModel(profile, costs=CostModel.IN_LOOP)
    stages = sorted({(r["kind"], r["k"]) for r in profile.rows})
    table = fit_served_costs(
        runs, lambda kind, k, b: base.lookup(kind, k, b)[0],
        [(kind, k, sorted(r["batch"] for r in profile.stage(kind, k))) for kind, k in stages],
        [s["file"] for s in streams])
    fitted = LatencyProfile(rows=profile.rows, meta={**profile.meta, "served_costs": table},
                            source=profile.source)
    save_profile(fitted, plan_dir / served_profile_name(load))
    return fitted


def served_runs(plan_dir: Path, streams: list[dict[str, Any]], trace: ExitTrace
                ) -> list[dict[str, Any]]:
    """The arrays of a folder's real streams (entries of its manifest's ``served``/``runs``)."""
    return [read_run(plan_dir / "real" / s["file"], trace) for s in streams]


def _calibration_keys(plan: ValidationPlan, manifest: dict[str, Any],
                      points: list[dict[str, str]]) -> set[str]:
    """The (mode, load) keys ``--calibrate-on`` names; one error if it names none."""
    keys = set()
    for key, st in manifest["streams"].items():
        load = next(iter(st["load"].values()))
        for point in points:
            if ("mode" not in point or point["mode"] == st["mode"]) and (
                    "load" not in point or abs(float(point["load"]) - float(load)) < 1e-9):
                keys.add(key)
    if not keys:
        raise InputError("--calibrate-on", None, f"names none of this folder's operating points "
                         f"(loads {[next(iter(x.values())) for x in plan.loads]}, modes "
                         f"{[m.value for m in plan.modes]})", "name a load and mode the folder served")
    return keys


def served_profile_name(load: int | None) -> str:
    """The file :func:`served_profile` writes for load index ``load`` (None: every load)."""
    return "served-profile.json" if load is None else f"served-profile-L{load}.json"


def _served_profiles(plan_dir: Path, profile: LatencyProfile, manifest: dict[str, Any],
                     trace: ExitTrace, by_load: bool) -> dict[int | None, LatencyProfile]:
    """Served-cost profiles: the pooled one under None and, with ``by_load``, one per load
    index whose served streams are all there (every mode and repeat of that load)."""
    out = {None: served_profile(plan_dir, profile, manifest, trace)}
    if by_load:
        runs = [r for r in manifest["runs"] if isinstance(r.get("load"), int)]
        for li in sorted({r["load"] for r in runs}):
            want = {(r["key"], r["repeat"]) for r in runs if r["load"] == li}
            have = {(s["key"], s.get("repeat")) for s in manifest["served"] if s.get("load") == li}
            if want <= have:
                out[li] = served_profile(plan_dir, profile, manifest, trace, li)
    return out
