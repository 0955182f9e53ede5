"""Judge the simulation against the real runs of a validation folder (``offramp validate``).

Real and simulated runs are scored by the same function (``sim.metrics.summarize_run``). Per
(mode, load) and statistic, :func:`offramp.analysis.validation.judge.judge` gives the real runs' median,
their robust spread (median to quartile), the simulated value, its error against the real
median, and a verdict: within when |error| <= max(spread, target), too noisy when the spread
exceeds 25%; targets are 3% for p50 and the mean, 5% for p90/p99, 3% for throughput and busy
fraction, and none (the spread alone) at >= 90% busy (the requested busy fraction; for
absolute rates the real runs' median). Repeats that saturate or stray from the requested busy
fraction are flagged and left out. The exit match is within when every run's real exits
equal the trace's for >= 99.5% of its requests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offramp.analysis.validation.explain import explain_misses
from offramp.analysis.validation.io import read_real_side, read_run, real_records
from offramp.analysis.validation.judge import judge_cells
from offramp.analysis.validation.prepare import STATS, _json
from offramp.analysis.validation.served import (
    _calibration_keys,
    _served_profiles,
    served_profile,
    served_profile_name,
)
from offramp.analysis.validation.sim import sim_scenario, sim_study, write_sim_study
from offramp.common.atomic import atomic_path
from offramp.common.errors import InputError
from offramp.core.modes import CostModel, ExitMode, StageKind
from offramp.core.plan import ValidationPlan
from offramp.profiling.format import LatencyProfile, load_profile
from offramp.profiling.latency import LatencyModel, stage_costs
from offramp.profiling.served_level import segment_level
from offramp.sim.metrics import combine, summarize_run
from offramp.sim.records import RunRecords
from offramp.sim.runner import simulate
from offramp.traces.format import ExitTrace

TARGETS = {"latency_p50_ms": 0.03, "latency_mean_ms": 0.03, "latency_p90_ms": 0.05,
           "latency_p99_ms": 0.05, "throughput_rps": 0.03, "utilisation": 0.03}


def _spread(values: np.ndarray, seed: int = 0) -> dict[str, float]:
    med = float(np.median(values))
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(values, (2000, values.size)), axis=1)
    return {"median": med, "min": float(values.min()), "max": float(values.max()),
            "spread": float(np.abs(values - med).max() / med) if med else 0.0,
            "ci_lo": float(np.percentile(boot, 2.5)), "ci_hi": float(np.percentile(boot, 97.5))}


@dataclass(frozen=True)
class _Folder:
    """What judging one (mode, load) of a validation folder needs."""

    plan_dir: Path
    plan: ValidationPlan
    manifest: dict[str, Any]
    trace: ExitTrace
    policy: Any
    profile: LatencyProfile
    profiles: dict[int | None, LatencyProfile]
    in_loop: bool
    calibration: set[str] | None
    sim_replications: int
    policy_section: dict[str, Any] | None

    @property
    def real_dir(self) -> Path:
        return self.plan_dir / "real"


def compare(plan_dir: Path, trace: ExitTrace, policy, sim_replications: int = 5,
            in_loop: bool = True, served: bool = True, by_load: bool = True,
            policy_section: dict[str, Any] | None = None,
            calibrate_on: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Simulate every (mode, load) of the folder's real runs and judge it; write
    ``real.parquet``, ``sim.parquet``, ``validation.json`` and ``validation.png``, and with
    ``policy_section`` (the study's ``policy``) ``sim-study-KEY.yaml``: each simulated side as
    a plain study (:mod:`.validation_sim`).

    ``in_loop``: segments and heads cost what the profiler measured them to cost inside the
    serving loop (isolated time + the profile's in-loop residual), not their isolated time.
    ``served``: where the folder has served streams, stage costs and how they move with the
    loop's state come from those (:func:`served_profile`), not from the profiler's loop;
    ``by_load``: each load's from the served streams of that load (the loop runs faster the
    harder it is driven: docs/validation.md), else one table from every load's.
    ``calibrate_on``: one table from the served streams of these operating points only
    ({"load": busy fraction or rate as given, "mode": ...}); every other cell is held out."""
    plan, manifest = read_real_side(plan_dir)
    if json.loads(json.dumps(policy.get_params(), default=_json)) != plan.policy:
        raise InputError(plan_dir / "plan.json", "policy", "the study's policy is not the one "
                         "the real runs served", "compare with the study they were run from")
    profile = load_profile(plan_dir / "real" / "profile.json")
    profiles: dict[int | None, LatencyProfile] = {None: profile}
    calibration = _calibration_keys(plan, manifest, calibrate_on) if calibrate_on else None
    if in_loop and served and manifest.get("served"):
        if calibration is not None:
            chosen = [s for s in manifest["served"] if s["key"] in calibration]
            profiles = {None: served_profile(plan_dir, profile, {**manifest, "served": chosen},
                                             trace)}
        else:
            profiles = _served_profiles(plan_dir, profile, manifest, trace, by_load)
    folder = _Folder(plan_dir, plan, manifest, trace, policy, profile, profiles, in_loop,
                     calibration, sim_replications, policy_section)
    keys: dict[str, list] = {}
    for run in manifest["runs"]:
        keys.setdefault(run["key"], []).append(run)
    parts = [_judge_key(folder, key, runs) for key, runs in keys.items()]
    rows, real_frames, sim_frames, stage_frames = ([x for part in parts for x in part[i]]
                                                   for i in range(4))
    table = pd.DataFrame(rows)
    real_all, sim_all = (pd.concat(f, ignore_index=True) for f in (real_frames, sim_frames))
    for name, frame in (("real.parquet", real_all), ("sim.parquet", sim_all)):
        with atomic_path(plan_dir / name) as tmp:
            frame.to_parquet(tmp, index=False)
    doc = {"plan": plan.to_dict(), "machine": manifest.get("machine"), "streams": manifest["streams"],
           "runs": manifest["runs"], "profile": profile.source, "in_loop_stages": in_loop,
           "served_costs": profiles[None].meta.get("served_costs") if in_loop else None,
           "served_costs_by_load": {f"L{li}": p.meta["served_costs"] for li, p in profiles.items()
                                    if li is not None},
           "calibrate_on": sorted(calibration) if calibration is not None else None,
           "table": json.loads(table.to_json(orient="records")),
           "explanations": explain_misses(table, real_all, sim_all)}
    with atomic_path(plan_dir / "validation.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    from offramp.analysis.report.plots import plot_validation

    plot_validation(real_all, sim_all, pd.concat(stage_frames, ignore_index=True),
                    plan_dir / "validation.png")
    return {"table": table, "doc": doc}


def _judge_key(f: _Folder, key: str, runs: list[dict[str, Any]]) -> tuple[list, ...]:
    """One (mode, load): its real repeats scored, its simulated side run, every cell judged.
    Returns (table rows, real frames, simulated frames, stage frames)."""
    st, trace, k = f.manifest["streams"][key], f.trace, f.trace.n_exits
    warm, mode = f.plan.warmup_fraction, ExitMode.parse(st["mode"])
    li = runs[0].get("load") if runs[0].get("load") in f.profiles else None
    # Served costs where this load has them, else the profiler's in-loop (or isolated) ones.
    cost_model = None if f.in_loop else CostModel.ISOLATED
    model = stage_costs(f.profiles[li], cost_model)
    costs = "profiler" if f.profiles[None] is f.profile else served_profile_name(li)
    profile_path = f.real_dir / "profile.json" if costs == "profiler" else f.plan_dir / costs
    # The machine's level in each repeat against the served table simulated with, if any.
    table = f.profiles[li].meta.get("served_costs") if model.costs is CostModel.SERVED else None
    real, real_frames, stage_frames, levels = [], [], [], []
    for r in runs:
        data = read_run(f.real_dir / r["file"], trace)
        if table:
            levels.append(segment_level(table, [data]))
        rec = real_records(data)
        real.append(summarize_run(rec, trace, warm, None, 1))
        want = (f.policy.exit_index(trace, data["sample"]) if mode.consults_early_exits
                else np.full(data["sample"].size, k - 1))
        real[-1]["exit_match"] = float((data["exit"] == want).mean())
        real_frames.append(_frame(rec, trace, warm).assign(key=key, mode=mode, repeat=r["repeat"]))
        stage_frames.append(_stages(data, model).assign(key=key))
    study = sim_study(trace, f.plan, mode, profile_path, cost_model, f.real_dir / st["arrivals"],
                      int(data["arrival"].size), f.sim_replications,
                      f.policy_section or {"name": "none"})
    cfg, scenario = sim_scenario(study, trace, f.policy)
    if f.policy_section is not None:
        write_sim_study(study, f.plan_dir / f"sim-study-{key}.yaml")
    res = simulate(scenario, cfg.run)
    sim = combine(res.runs)
    sim_frames = [_frame(rec, trace, warm).assign(key=key, mode=mode, replication=i)
                  for i, rec in enumerate(res.records)]
    cells, flagged = judge_cells(real, [r["busy_fraction"] for r in runs],
                                 {stat: v["mean"] for stat, v in sim.items()},
                                 STATS + [f"batch_size_stage_{j}" for j in range(k)],
                                 TARGETS, st["load"].get("utilisation"))
    known = [x for x in levels if x is not None]
    common = {"key": key, "mode": mode, "load": st["load"], "rate_rps": st["rate_rps"],
              "costs": costs, "held_out": f.calibration is None or key not in f.calibration,
              "level": float(np.median(known)) if known else None}
    rows = [{**common, **cell, "tail_samples": int(0.01 * real[0]["requests"]),
             "flagged": [runs[i]["repeat"] for i in flagged]} for cell in cells]
    match = _spread(np.array([r["exit_match"] for r in real]))
    ok = 1.0 - match["min"] <= 0.005
    rows.append({**common, "stat": "exit_match", **match, "sim": 1.0,
                 "error": match["median"] - 1.0, "target": 0.005, "within": ok,
                 "verdict": "within" if ok else "outside", "tail_samples": 0,
                 "repeats": len(real), "flagged": []})
    return rows, real_frames, sim_frames, stage_frames


def _frame(rec: RunRecords, trace: ExitTrace, warm: float) -> pd.DataFrame:
    from offramp.sim.metrics import measured_mask

    return pd.DataFrame({"sample_id": rec.sample, "arrival_s": rec.arrival,
                         "dispatch_s": rec.dispatch, "finish_s": rec.finish,
                         "latency_ms": (rec.finish - rec.arrival) * 1000.0,
                         "exit_index": rec.exit, "batch_id": rec.batch,
                         "correct": trace.correct[rec.sample, rec.exit],
                         "warmup": ~measured_mask(rec, warm)})


def _stages(data: dict[str, np.ndarray], model: LatencyModel) -> pd.DataFrame:
    """Every timed stage of a real run beside the profile's p50 for it (ms)."""
    kinds = [StageKind.from_code(c) for c in data["stage_kind"].tolist()]
    pred = []
    for kind, kk, b in zip(kinds, data["stage_k"].tolist(), data["stage_size"].tolist(),
                           strict=True):
        try:
            pred.append(model.lookup(kind, kk, b)[0])
        except (InputError, KeyError, ValueError):
            pred.append(np.nan)
    return pd.DataFrame({"kind": kinds, "k": data["stage_k"], "batch": data["stage_size"],
                         "real_ms": data["stage_ms"], "profile_p50_ms": pred})


def batch_times(data: dict[str, np.ndarray], model: LatencyModel
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per batch of a real run: (timed ms, the model's p50 ms for the same stages, idle ms
    before it; the first batch counts as after a long idle)."""
    nb = data["batch_dispatch"].size
    got, pred = np.zeros(nb), np.zeros(nb)
    np.add.at(got, data["stage_batch"], data["stage_ms"])
    for b, kc, k, size in zip(data["stage_batch"], data["stage_kind"], data["stage_k"],
                              data["stage_size"], strict=True):
        pred[b] += model.lookup(StageKind.from_code(kc), int(k), int(size))[0]
    idle_ms = 1000 * np.r_[1.0, data["batch_dispatch"][1:] - data["batch_finish"][:-1]]
    return got, pred, idle_ms
