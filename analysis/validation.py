"""Judge the simulation against the real runs of a validation folder (``offramp validate``).

Real and simulated runs are scored by the same function (``sim.metrics.summarize_run``). Per
(mode, load) and statistic: the real runs' median, their spread (the largest distance of a
run from the median, relative to it), a bootstrap 95% CI of the median over repeats, the
simulated value, its error against the real median, and a verdict: within when
|error| <= max(spread, target); targets are 3% for p50 and the mean, 5% for p90/p99, 3% for
throughput and busy fraction, and none (the spread alone) at >= 90% busy (the requested
busy fraction; for absolute rates the real runs' median). The exit match is within when every
run's real exits equal the trace's for >= 99.5% of its requests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offramp.common.atomic import atomic_path
from offramp.common.errors import InputError
from offramp.core.modes import ExitMode, StageKind
from offramp.profiling.format import LatencyProfile, load_profile
from offramp.profiling.latency import LatencyModel
from offramp.sim.config import RunConfig, ServerConfig, WorkloadConfig
from offramp.sim.metrics import combine, summarize_run
from offramp.sim.records import RunRecords
from offramp.sim.runner import simulate
from offramp.sim.scenario import Scenario
from offramp.sim.service import ServiceTimes
from offramp.sim.workload import workload_from
from offramp.traces.format import ExitTrace

from .validate import STATS, _json

TARGETS = {"latency_p50_ms": 0.03, "latency_mean_ms": 0.03, "latency_p90_ms": 0.05,
           "latency_p99_ms": 0.05, "throughput_rps": 0.03, "utilisation": 0.03}


RUN_ARRAYS = ("arrival", "sample", "dispatch", "finish", "exit", "pred", "batch",
              "batch_dispatch", "batch_finish", "batch_sizes", "batch_reason", "stage_batch",
              "stage_kind", "stage_k", "stage_size", "stage_ms")
PLAN_FIELDS = {"max_batch": int, "max_wait_ms": (int, float), "warmup_fraction": (int, float),
               "seed": int, "policy": dict, "model": str}


def _json_file(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InputError(path.parent, None, f"is not a validation folder (no {path.name})",
                         "pass a folder written by offramp validate (--real-only)")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"the {what} is not JSON ({exc})",
                         "rerun the real side (offramp validate --real-only)") from None


def read_real_side(plan_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plan and the real runs' manifest of a validation folder, checked."""
    if not plan_dir.is_dir():
        raise InputError(plan_dir, None, "is not a validation folder",
                         "pass a folder written by offramp validate (--real-only)")
    plan = _json_file(plan_dir / "plan.json", "plan")
    if not isinstance(plan, dict):
        raise InputError(plan_dir / "plan.json", None, "must be a mapping", "rerun offramp validate")
    for key, kind in PLAN_FIELDS.items():
        if key not in plan or not isinstance(plan[key], kind) or isinstance(plan[key], bool):
            raise InputError(plan_dir / "plan.json", key, "missing or of the wrong type",
                             "rerun offramp validate")
    if plan["max_batch"] < 1 or plan["max_wait_ms"] < 0 or not 0 <= plan["warmup_fraction"] < 1:
        raise InputError(plan_dir / "plan.json", "max_batch", "max_batch, max_wait_ms or "
                         "warmup_fraction out of range", "rerun offramp validate")
    real_dir = plan_dir / "real"
    if not (real_dir / "profile.json").is_file():
        raise InputError(real_dir, None, "no real runs here (manifest.json and profile.json)",
                         "run the real side first (offramp validate without --real-from)")
    manifest = _json_file(real_dir / "manifest.json", "manifest")
    src = real_dir / "manifest.json"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("streams"), dict) \
            or not isinstance(manifest.get("runs"), list):
        raise InputError(src, "streams", "must hold streams (a mapping) and runs (a list)",
                         "rerun the real side")
    if not manifest["runs"]:
        raise InputError(src, "runs", "no real run has finished yet", "run the real side")
    for i, run in enumerate(manifest["runs"]):
        if not isinstance(run, dict) or not all(k in run for k in ("file", "key", "repeat")):
            raise InputError(src, f"runs[{i}]", "must name file, key and repeat",
                             "rerun the real side")
        stream = manifest["streams"].get(run["key"])
        if not isinstance(stream, dict) or not all(k in stream for k in
                                                   ("mode", "arrivals", "load", "rate_rps")):
            raise InputError(src, f"streams.{run['key']}", "missing or incomplete",
                             "rerun the real side")
    return plan, manifest


def read_run(path: Path, trace: ExitTrace) -> dict[str, np.ndarray]:
    """One real run's arrays, checked: every array there, samples from the test split."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {n: z[n] for n in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(path, None, f"not a readable real run ({exc})".replace("\n", " "),
                         "rerun the real side (its runs are resumable)") from None
    missing = [n for n in RUN_ARRAYS if n not in data]
    if missing:
        raise InputError(path, missing[0], "array missing", "rerun the real side")
    n = data["arrival"].size
    if any(data[k].shape[:1] != (n,) for k in ("sample", "dispatch", "finish", "exit", "batch")):
        raise InputError(path, "sample", "per-request arrays of different lengths",
                         "rerun the real side")
    if not np.isin(data["sample"], trace.indices("test")).all():
        raise InputError(path, "sample", "holds samples outside the trace's test split",
                         "compare with the trace the real runs were made for")
    return data


def real_records(run: dict[str, np.ndarray]) -> RunRecords:
    """A real run as the simulator's records (one replica)."""
    nb = run["batch_dispatch"].size
    return RunRecords(arrival=run["arrival"], sample=run["sample"], dispatch=run["dispatch"],
                      finish=run["finish"], exit=run["exit"],
                      replica=np.zeros(run["arrival"].size, dtype=np.int64), batch=run["batch"],
                      batch_replica=np.zeros(nb, dtype=np.int64),
                      batch_dispatch=run["batch_dispatch"], batch_finish=run["batch_finish"],
                      batch_sizes=run["batch_sizes"])


def _spread(values: np.ndarray, seed: int = 0) -> dict[str, float]:
    med = float(np.median(values))
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(values, (2000, values.size)), axis=1)
    return {"median": med, "min": float(values.min()), "max": float(values.max()),
            "spread": float(np.abs(values - med).max() / med) if med else 0.0,
            "ci_lo": float(np.percentile(boot, 2.5)), "ci_hi": float(np.percentile(boot, 97.5))}


def served_profile(plan_dir: Path, profile: LatencyProfile, manifest: dict[str, Any],
                   trace: ExitTrace, load: int | None = None) -> LatencyProfile:
    """The in-loop profile with ``served_costs`` fitted on the folder's served streams
    (``real/served-*.npz``: each mode and load served on arrivals of its own next to every
    repeat; :func:`offramp.profiling.served.fit_served_costs`): those of load index ``load``
    only, or of every load (None). Written beside the runs as ``served-profile-L{load}.json``
    or ``served-profile.json``, a profile ``simulate`` takes too."""
    from offramp.profiling.format import save_profile
    from offramp.profiling.served import fit_served_costs

    real_dir = plan_dir / "real"
    streams = [s for s in manifest["served"] if load is None or s.get("load") == load]
    runs = [read_run(real_dir / s["file"], trace) for s in streams]
    base = LatencyModel(profile, in_loop=True)
    stages = sorted({(r["kind"], r["k"]) for r in profile.rows})
    table = fit_served_costs(
        runs, lambda kind, k, b: base.lookup(kind, k, b)[0],
        [(kind, k, sorted(r["batch"] for r in profile.stage(kind, k))) for kind, k in stages],
        [s["file"] for s in streams])
    fitted = LatencyProfile(rows=profile.rows, meta={**profile.meta, "served_costs": table},
                            source=profile.source)
    save_profile(fitted, plan_dir / served_profile_name(load))
    return fitted


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


def compare(plan_dir: Path, trace: ExitTrace, policy, sim_replications: int = 5,
            in_loop: bool = True, served: bool = True, by_load: bool = True) -> dict[str, Any]:
    """Simulate every (mode, load) of the folder's real runs and judge it; write
    ``real.parquet``, ``sim.parquet``, ``validation.json`` and ``validation.png``.

    ``in_loop``: segments and heads cost what the profiler measured them to cost inside the
    serving loop (isolated time + the profile's in-loop residual), not their isolated time.
    ``served``: where the folder has served streams, stage costs and how they move with the
    loop's state come from those (:func:`served_profile`), not from the profiler's loop;
    ``by_load``: each load's from the served streams of that load (the loop runs faster the
    harder it is driven: docs/validation.md), else one table from every load's."""
    real_dir = plan_dir / "real"
    plan, manifest = read_real_side(plan_dir)
    if json.loads(json.dumps(policy.get_params(), default=_json)) != plan["policy"]:
        raise InputError(plan_dir / "plan.json", "policy", "the study's policy is not the one "
                         "the real runs served", "compare with the study they were run from")
    profile = load_profile(real_dir / "profile.json")
    profiles: dict[int | None, LatencyProfile] = {None: profile}
    if in_loop and served and manifest.get("served"):
        profiles = _served_profiles(plan_dir, profile, manifest, trace, by_load)
    k, mb, warm = trace.n_exits, plan["max_batch"], plan["warmup_fraction"]
    rows, real_frames, sim_frames, stage_frames, keys = [], [], [], [], {}
    for run in manifest["runs"]:
        keys.setdefault(run["key"], []).append(run)
    for key, runs in keys.items():
        st = manifest["streams"][key]
        mode = ExitMode.parse(st["mode"])
        li = runs[0].get("load") if runs[0].get("load") in profiles else None
        model = LatencyModel(profiles[li], in_loop=in_loop)
        costs = ("profiler" if profiles[None] is profile else served_profile_name(li))
        real = []
        for r in runs:
            data = read_run(real_dir / r["file"], trace)
            rec = real_records(data)
            real.append(summarize_run(rec, trace, warm, None, 1))
            want = (policy.exit_index(trace, data["sample"]) if mode.consults_early_exits
                    else np.full(data["sample"].size, k - 1))
            real[-1]["exit_match"] = float((data["exit"] == want).mean())
            real_frames.append(_frame(rec, trace, warm).assign(key=key, mode=mode,
                                                               repeat=r["repeat"]))
            stage_frames.append(_stages(data, model).assign(key=key))
        server = ServerConfig(max_batch=mb, max_wait_ms=plan["max_wait_ms"], exit_mode=mode)
        svc = ServiceTimes.from_latency(model, n_exits=k, max_batch=mb, mode=mode, sampled=True)
        wl = workload_from(WorkloadConfig(kind="replay", path=str(real_dir / st["arrivals"])))
        n = int(data["arrival"].size)
        res = simulate(Scenario(trace, policy, svc, server, wl),
                       RunConfig(requests=max(n, 1), replications=sim_replications,
                                 warmup_fraction=warm, seed=plan["seed"]))
        sim = combine(res.runs)
        for i, rec in enumerate(res.records):
            sim_frames.append(_frame(rec, trace, warm).assign(key=key, mode=mode, replication=i))
        busy = st["load"].get("utilisation", float(np.median([r["busy_fraction"] for r in runs])))
        high = busy >= 0.9
        for stat in STATS + [f"batch_size_stage_{j}" for j in range(k)]:
            s = _spread(np.array([r[stat] for r in real]))
            sim_v = sim[stat]["mean"]
            err = (sim_v - s["median"]) / s["median"] if s["median"] else (
                0.0 if sim_v == 0 else float("inf"))
            target = 0.0 if high else TARGETS.get(stat, 0.05)
            rows.append({"key": key, "mode": mode, "load": st["load"], "rate_rps": st["rate_rps"],
                         "stat": stat, **s, "sim": sim_v, "error": err, "target": target,
                         "within": bool(abs(err) <= max(s["spread"], target)),
                         "tail_samples": int(0.01 * real[0]["requests"]),
                         "repeats": len(real), "costs": costs})
        match = _spread(np.array([r["exit_match"] for r in real]))
        rows.append({"key": key, "mode": mode, "load": st["load"], "rate_rps": st["rate_rps"],
                     "stat": "exit_match", **match, "sim": 1.0, "error": match["median"] - 1.0,
                     "target": 0.005, "within": bool(1.0 - match["min"] <= 0.005),
                     "tail_samples": 0, "repeats": len(real), "costs": costs})
    table = pd.DataFrame(rows)
    for name, frames in (("real.parquet", real_frames), ("sim.parquet", sim_frames)):
        with atomic_path(plan_dir / name) as tmp:
            pd.concat(frames, ignore_index=True).to_parquet(tmp, index=False)
    doc = {"plan": plan, "machine": manifest.get("machine"), "streams": manifest["streams"],
           "runs": manifest["runs"], "profile": profile.source, "in_loop_stages": in_loop,
           "served_costs": profiles[None].meta.get("served_costs") if in_loop else None,
           "served_costs_by_load": {f"L{li}": p.meta["served_costs"] for li, p in profiles.items()
                                    if li is not None},
           "table": json.loads(table.to_json(orient="records"))}
    with atomic_path(plan_dir / "validation.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    from .plots import plot_validation

    stages = pd.concat(stage_frames, ignore_index=True)
    plot_validation(pd.concat(real_frames, ignore_index=True),
                    pd.concat(sim_frames, ignore_index=True), stages, plan_dir / "validation.png")
    return {"table": table, "doc": doc}


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
