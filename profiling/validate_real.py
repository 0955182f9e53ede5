"""Run the real side of a validation plan: profile in the loop, calibrate, serve, repeat.

    python -m offramp.profiling.validate_real PLAN_DIR        (writes PLAN_DIR/real/)

``offramp validate`` writes the plan folder (``plan.json``: model, device, batcher, exit rule,
modes, loads, repeats; ``inputs.npz``: the test inputs by sample id) and runs this in-process;
on a GPU box without the simulator's dependencies the same folder is run with the line above
and the comparison is done later (``offramp validate --real-from``). Per (mode, load) the
arrivals are drawn once, so every repeat serves the same requests; repeats interleave loads
and modes so that drift hits all of them alike. Measurement side: torch, numpy and the
standard library only.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offramp.common.atomic import atomic_path
from offramp.common.machine import cpu_name
from offramp.core.plan import ValidationPlan

from .format import save_profile
from .job import ProfileJob, load_model
from .real_runs import busy_fraction, calibrate_rate, pin_to_one_core, poisson_stream, serve_stream
from .serving_loop import ServingLoop

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def load_inputs(plan_dir: Path) -> tuple[dict[int, int], list[np.ndarray]]:
    """(sample id -> row, input parts) from ``inputs.npz``."""
    with np.load(plan_dir / "inputs.npz") as z:
        ids = z["ids"]
        parts = [z[f"x{i}"] for i in range(int(z["n_parts"]))]
    return {int(s): r for r, s in enumerate(ids.tolist())}, parts


def _input_fn(rows: dict[int, int], parts: list[np.ndarray]):
    tensors = [torch.from_numpy(p) for p in parts]

    def get(sample: int) -> Any:
        r = rows[sample]
        one = [t[r:r + 1] for t in tensors]
        return one[0] if len(one) == 1 else tuple(one)
    return get


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def served_count(plan: ValidationPlan, stream: dict) -> int:
    """Requests of a served stream: ``served_requests``, or as many as arrive in
    ``served_seconds`` at the stream's rate where that is more; never more than a repeat's."""
    n = max(int(plan.served_requests),
            math.ceil(float(plan.served_seconds) * stream["rate_rps"]))
    return min(n, int(plan.requests))


def run_plan(plan_dir: str | Path, log=print) -> Path:
    """Run the plan in ``plan_dir``; write ``real/`` (one .npz per run, arrivals, profile,
    manifest.json) and return its path. A run already written is kept (a re-run resumes).
    The process's CPU affinity and torch threads are restored afterwards."""
    import os

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads = torch.get_num_threads()
    try:
        return _run_plan(Path(plan_dir), log)
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        torch.set_num_threads(threads)


def _run_plan(plan_dir: Path, log) -> Path:
    plan = ValidationPlan.from_json((plan_dir / "plan.json").read_text())
    out = plan_dir / "real"
    out.mkdir(exist_ok=True)
    loop_for, inputs, test_ids, core = _real_model(plan, plan_dir, out, log)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {
        "streams": {}, "runs": []}
    _find_rates(plan, out, manifest, loop_for, inputs, test_ids, log)
    _serve_repeats(plan, out, manifest, loop_for, inputs, test_ids, log)
    device = plan.device
    manifest["machine"] = {"device": device, "cpu": cpu_name(), "core": core,
                           "python": platform.python_version(),
                           "torch": torch.__version__, "platform": platform.platform(),
                           "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
                           "cuda": torch.version.cuda if device == "cuda" else None}
    _write_json(manifest_path, manifest)
    return out


def stream_seed(plan: ValidationPlan, *path: int) -> int:
    """The seed of one stream, spawned from the plan's seed (no arithmetic on seeds)."""
    return int(np.random.SeedSequence([plan.seed, *path]).generate_state(1)[0])


def _real_model(plan: ValidationPlan, plan_dir: Path, out: Path, log):
    """The real model on its device, its serving loops, the inputs; the in-loop profile
    measured first where the plan asks. Returns (loop for a mode, inputs, test ids, core)."""
    device, dtype = plan.device, DTYPES[plan.precision]
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("validate: --device cuda but CUDA is not available on this machine")
    core = None
    if device == "cpu":
        core = pin_to_one_core(plan.core)
        torch.set_num_threads(1)
    own = plan.model_factory
    job = ProfileJob(model=None if own else plan.model, output=out / "profile.json",
                     device=device, precision=plan.precision, model_factory=own,
                     model_arg=tuple(plan.model_args), model_id=plan.model if own else None,
                     checkpoint=Path(plan.checkpoint) if plan.checkpoint else None,
                     seq_len=plan.seq_len)
    model, example, _ = load_model(job)
    model = model.to(device=device, dtype=dtype)
    rows, parts = load_inputs(plan_dir)
    inputs = _input_fn(rows, parts)
    rule = plan.rule
    table = np.load(plan_dir / "exit_table.npy").tolist() if rule.kind == "table" else None
    # A plan without early exits serves max-prob with thresholds nobody reaches.
    loop_rule = "maxprob" if rule.kind == "none" else rule.kind

    def loop_for(mode: str) -> ServingLoop:
        return ServingLoop(model, device, dtype, mode, rule.thresholds, rule.active,
                           rule=loop_rule, table=table, discipline=plan.discipline,
                           stage_wait_ms=plan.stage_max_wait_ms)

    if plan.measure_profile and not (out / "profile.json").exists():
        from .measure import RunPolicy
        from .profile_model import profile_model

        log(f"measuring the in-loop profile on {device} (batches {list(plan.profile_batches)})")
        prof = profile_model(model, "eager", device, plan.precision, example,
                             plan.profile_batches, RunPolicy(runs=plan.profile_runs, warmup=5),
                             plan.command, loop_rule=loop_rule)
        save_profile(prof, out / "profile.json")
    test_ids = sorted(rows)
    mb, wait = plan.max_batch, plan.max_wait_ms
    for mode in plan.modes:  # warm the loop once per mode before any timing
        t, s = poisson_stream(1e6, min(mb, len(test_ids)), test_ids, 0)
        serve_stream(loop_for(mode), inputs, t, s, mb, wait)
    return loop_for, inputs, test_ids, core


def _find_rates(plan: ValidationPlan, out: Path, manifest: dict, loop_for, inputs,
                test_ids: list[int], log) -> None:
    """Each (mode, load)'s rate (given, or calibrated to its busy fraction) and arrivals."""
    streams, mb, wait = manifest["streams"], plan.max_batch, plan.max_wait_ms
    for mode in plan.modes:
        for li, load in enumerate(plan.loads):
            key = f"{mode}-L{li}"
            if key in streams:
                continue
            loop = loop_for(mode)
            if "rate_rps" in load:
                rate, probes = float(load["rate_rps"]), []
            else:
                def probe(rate: float, loop=loop) -> float:
                    t, s = poisson_stream(rate, plan.calib_requests, test_ids, 12345)
                    return busy_fraction(serve_stream(loop, inputs, t, s, mb, wait),
                                         plan.warmup_fraction)
                rate, probes = calibrate_rate(probe, load["utilisation"],
                                              load["utilisation"] * plan.rate0_rps)
            times, samples = poisson_stream(rate, plan.requests, test_ids, stream_seed(plan, li))
            path = out / f"arrivals-{key}.csv"
            with atomic_path(path, suffix=".csv") as tmp:
                np.savetxt(tmp, np.column_stack([times, samples]), delimiter=",",
                           fmt=["%.17g", "%d"], header="arrival_s,sample_id", comments="")
            streams[key] = {"mode": mode, "load": load, "rate_rps": rate, "probes": probes,
                            "arrivals": path.name}
            log(f"{key}: {load} -> {rate:.1f} req/s (probes {probes})")
            _write_json(out / "manifest.json", manifest)


def _serve_repeats(plan: ValidationPlan, out: Path, manifest: dict, loop_for, inputs,
                   test_ids: list[int], log) -> None:
    """Every repeat of every (mode, load), each after a served stream of its own (a re-run
    keeps what is written)."""
    served, mb, wait = manifest.setdefault("served", []), plan.max_batch, plan.max_wait_ms
    for r in range(plan.repeats):
        for li in range(len(plan.loads)):
            for mode in plan.modes:
                key = f"{mode}-L{li}"
                st = manifest["streams"][key]
                # A served stream first: this (mode, load) on arrivals of its own, next to the
                # repeat in time, so the stage costs the simulation fits on these
                # (profiling/served.py) drift with the machine as the repeats do, and the
                # repeats it is judged against stay out of its fit.
                name = f"served-{key}-r{r}.npz"
                if plan.served_requests and not any(s["file"] == name for s in served):
                    times, samples = poisson_stream(st["rate_rps"], served_count(plan, st),
                                                    test_ids, stream_seed(plan, li, r, 1))
                    t0 = time.time()
                    res = serve_stream(loop_for(mode), inputs, times, samples, mb, wait)
                    _save_npz(out / name, res)
                    served.append({"file": name, "key": key, "mode": mode, "load": li,
                                   "repeat": r,
                                   "busy_fraction": busy_fraction(res, plan.warmup_fraction),
                                   "wall_s": round(time.time() - t0, 2), "loadavg": _loadavg()})
                    _write_json(out / "manifest.json", manifest)
                name = f"{key}-r{r}.npz"
                if any(run["file"] == name for run in manifest["runs"]):
                    continue
                data = np.loadtxt(out / st["arrivals"], delimiter=",", skiprows=1, ndmin=2)
                t0 = time.time()
                res = serve_stream(loop_for(mode), inputs, data[:, 0], data[:, 1].astype(np.int64),
                                   mb, wait)
                _save_npz(out / name, res)
                u = busy_fraction(res, plan.warmup_fraction)
                manifest["runs"].append({"file": name, "key": key, "mode": mode, "load": li,
                                         "repeat": r, "busy_fraction": u,
                                         "wall_s": round(time.time() - t0, 2),
                                         "loadavg": _loadavg()})
                log(f"{name}: busy {u:.3f}, {time.time() - t0:.1f} s")
                _write_json(out / "manifest.json", manifest)


def _loadavg() -> list[float] | None:
    try:
        import os

        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _write_json(path: Path, doc: dict) -> None:
    with atomic_path(path, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    run_plan(sys.argv[1])
