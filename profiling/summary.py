"""What a latency profile holds, stage by stage, and how two profiles differ."""

from __future__ import annotations

import statistics
from typing import Any

from offramp.common.errors import InputError
from offramp.core.modes import ExitMode

from .format import KINDS, LatencyProfile


def stage_summary(profile: LatencyProfile) -> list[dict[str, Any]]:
    """Per stage: measured batch range, runs, and p50 at the smallest, 32 and largest size."""
    out = []
    keys = sorted({(r["kind"], r["k"]) for r in profile.rows},
                  key=lambda s: (KINDS.index(s[0]), s[1]))
    for kind, k in keys:
        rows = profile.stage(kind, k)
        by_b = {r["batch"]: r for r in rows}
        runs = [r["runs"] for r in rows]
        out.append({"kind": kind, "k": k, "batch_min": rows[0]["batch"],
                    "batch_max": rows[-1]["batch"], "n_batches": len(rows),
                    "runs_min": min(runs), "runs_max": max(runs),
                    "p50_ms_min_batch": rows[0]["p50_ms"],
                    "p50_ms_b32": by_b[32]["p50_ms"] if 32 in by_b else None,
                    "p50_ms_max_batch": rows[-1]["p50_ms"]})
    return out


def profile_summary(name: str, profile: LatencyProfile) -> dict[str, Any]:
    """One line of ``profile list``."""
    m = profile.meta
    sizes = sorted({r["batch"] for r in profile.rows})
    return {"name": name, "model_id": m["model_id"], "n_exits": m["n_exits"],
            "device": m["device"], "backend": m["backend"], "precision": m["precision"],
            "batch_min": sizes[0], "batch_max": sizes[-1], "n_batches": len(sizes),
            "kinds": sorted({r["kind"] for r in profile.rows}),
            "synthetic": bool(m["synthetic"]), "date": m["date"]}


def compare_profiles(a: LatencyProfile, b: LatencyProfile, noisy: float = 0.10) -> dict[str, Any]:
    """Relative p50 difference |a - b| / mean(a, b) per (stage, batch) row, per stage and overall.

    A stage is noisy when the 90th percentile of its rows' relative differences exceeds ``noisy``.
    """
    import numpy as np

    rows_b = {(r["kind"], r["k"], r["batch"]): r for r in b.rows}
    per_stage: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in a.rows:
        other = rows_b.get((r["kind"], r["k"], r["batch"]))
        if other is None:
            continue
        diff = abs(r["p50_ms"] - other["p50_ms"])
        mean = (r["p50_ms"] + other["p50_ms"]) / 2
        per_stage.setdefault((r["kind"], r["k"]), []).append((diff / mean if mean else 0.0, diff))
    if not per_stage:
        raise InputError(b.source, "rows", "no (stage, batch size) in common with "
                         f"{a.source}", "compare profiles of the same model")
    stages = []
    for (kind, k), v in per_stage.items():
        rel = np.array([x[0] for x in v])
        p90 = float(np.percentile(rel, 90))
        stages.append({"kind": kind, "k": k, "n": len(v),
                       "median_rel_diff": round(float(np.median(rel)), 4),
                       "p90_rel_diff": round(p90, 4), "max_rel_diff": round(float(rel.max()), 4),
                       "max_abs_diff_ms": round(max(x[1] for x in v), 4), "noisy": p90 > noisy})
    every = [x[0] for v in per_stage.values() for x in v]
    return {"a": a.source, "b": b.source, "n_rows": len(every),
            "max_rel_diff": round(max(every), 4),
            "median_rel_diff": round(statistics.median(every), 4),
            "noisy_threshold": noisy,
            "noisy_stages": [f"{s['kind']} {s['k']}" for s in stages if s["noisy"]],
            "stages": stages}


def missing_by_mode(profile: LatencyProfile) -> dict[ExitMode, list[str]]:
    """Per exit mode, the stages (``"compact 0"``) the profile lacks to serve it."""
    have = {(r["kind"], int(r["k"])) for r in profile.rows}
    return {mode: [f"{kind} {k}" for kind, k in mode.stages_needed(int(profile.meta["n_exits"]))
                   if (kind.value, k) not in have] for mode in ExitMode}


def how_to_supply(missing: list[str]) -> str:
    """Advice for stages a profile lacks: measure them, or import them beside what it has."""
    kinds = sorted({m.split()[0] for m in missing})
    rows = ", ".join(f"kind={m.split()[0]},k={m.split()[1]}" for m in missing[:3])
    return (f"measure them with `offramp profile run` (it times every stage, {' and '.join(kinds)} "
            f"included; `--model-factory` for your own model), or add CSV rows ({rows}"
            f"{', ...' if len(missing) > 3 else ''}) and import them with --csv beside what you "
            "imported (`offramp profile import --trtexec ... --csv ...`)")


FALL = 0.10  # a model stage's per-batch p50 that falls by more than this fraction ...
FALL_MS = 0.05  # ... and this many ms as the batch grows (smaller drops are timing noise)
SPREAD = 10.0  # a p99 more than this many times its p50


def profile_warnings(profile: LatencyProfile) -> list[str]:
    """Rows a careful user would look at again, one line per stage: a segment or head whose
    per-batch time falls as the batch grows (by more than :data:`FALL` and :data:`FALL_MS`),
    or a stage whose p99 is more than :data:`SPREAD` times its p50."""
    out = []
    for kind, k in sorted({(r["kind"], int(r["k"])) for r in profile.rows}):
        rows = sorted(profile.stage(kind, k), key=lambda r: r["batch"])
        falls = [(a, b) for a, b in zip(rows, rows[1:], strict=False)
                 if kind in ("segment", "head") and b["p50_ms"] < (1 - FALL) * a["p50_ms"]
                 and a["p50_ms"] - b["p50_ms"] > FALL_MS]
        if falls:
            a, b = max(falls, key=lambda ab: ab[0]["p50_ms"] - ab[1]["p50_ms"])
            more = f" (and {len(falls) - 1} more sizes)" if len(falls) > 1 else ""
            out.append(f"{kind} {k}: p50 falls from {a['p50_ms']:.4g} ms at batch "
                       f"{a['batch']} to {b['p50_ms']:.4g} ms at batch {b['batch']}{more}: real for "
                       "some kernels at aligned sizes, or timing noise; re-measure to tell")
        wide = [r for r in rows if r["p50_ms"] > 0 and r["p99_ms"] > SPREAD * r["p50_ms"]]
        if wide:
            r = max(wide, key=lambda r: r["p99_ms"] / r["p50_ms"])
            more = f" (and {len(wide) - 1} more sizes)" if len(wide) > 1 else ""
            out.append(f"{kind} {k} at batch {r['batch']}: p99 {r['p99_ms']:.4g} ms is "
                       f"{r['p99_ms'] / r['p50_ms']:.0f}x its p50{more}: interference while "
                       "timing? re-measure with more --runs on a quiet machine")
    return out


def calibration_lines(profile: LatencyProfile) -> list[str]:
    """Which cost models the profile holds (the default last) and what its served calibration
    was fitted on, saying so where that machine is not the one the rows were measured on."""
    from .latency import calibrations

    held = calibrations(profile)
    lines = [f"cost models: {', '.join(c.value for c in held)} (default {held[-1].value})"]
    served = profile.meta.get("served_costs")
    if not served:
        return lines
    fit = served.get("fitted_on") or {}
    machine = fit.get("machine") or {}
    cpu = machine.get("gpu") or machine.get("cpu") or \
        f"{fit.get('device', '?')} (model not recorded; {machine.get('platform', '?')})"
    lines.append(
        f"served: fitted {str(fit.get('date', '?'))[:10]} on {cpu}, {fit.get('streams', '?')} "
        f"streams (loads {_items(fit.get('loads'))}; modes {_items(fit.get('modes'))}; max_batch "
        f"{fit.get('max_batch')}; max_wait {fit.get('max_wait_ms')} ms), median |residual| "
        f"{served.get('median_abs_residual', '?')}")
    moved = served.get("relevelled")
    if moved:
        from .served_level import describe_factors

        lines.append(f"re-levelled {str(moved.get('date', '?'))[:10]} on {moved.get('streams')} "
                     f"streams (loads {_items(moved.get('loads'))}; modes "
                     f"{_items(moved.get('modes'))}): {describe_factors(moved.get('factor', {}))}")
    if machine.get("cpu") and not machine.get("gpu") and machine["cpu"] != profile.meta.get("device"):
        lines.append(f"note: the served calibration ran on {machine['cpu']}, the rows on "
                     f"{profile.meta.get('device')}: served predictions are for the former")
    return lines


def _items(values: Any) -> str:
    return ", ".join(str(v) for v in values) if isinstance(values, list) else str(values)
