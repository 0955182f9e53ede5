"""``offramp validate``: the chosen config run for real, repeated, and the simulation judged
against the real runs' own spread.

:func:`prepare` turns a study into a plan folder (``plan.json``, the test inputs, a saved exit
table where needed); :mod:`offramp.profiling.validate_real` runs the real side into
``real/`` (here, or on a GPU box); :func:`compare` simulates the same arrivals and samples with
the in-loop profile and scores real and simulated runs with the same code
(:func:`offramp.sim.metrics.summarize_run`). docs/validation.md explains the method.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from offramp.analysis.study.config import StudyConfig
from offramp.analysis.study.resolve import fit_policy, load_study_profile, load_study_trace, resolve_workload
from offramp.common.atomic import atomic_path
from offramp.common.errors import InputError
from offramp.core.modes import ExitMode
from offramp.core.plan import PlanError, ValidationPlan
from offramp.policies.base import ExitPolicy
from offramp.policies.confidence import Entropy, MaxProb
from offramp.traces.format import ExitTrace

STATS = ["latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms",
         "throughput_rps", "utilisation"]
PROFILE_BATCHES = [1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64]


def exit_rule(policy: ExitPolicy, trace: ExitTrace) -> tuple[dict[str, Any], np.ndarray | None]:
    """How the real loop takes this policy's decisions: thresholds on the real head outputs
    (max-prob, entropy), or the policy's per-sample exit table; (rule, table or None)."""
    k = trace.n_exits
    active = [bool(a) for a in policy.active_exits(k)]
    if policy.name == "none":
        return {"kind": "none", "thresholds": [float("inf")] * (k - 1), "active": active}, None
    if isinstance(policy, MaxProb | Entropy):
        return {"kind": policy.name, "thresholds": [float(t) for t in policy.thresholds_],
                "active": active}, None
    if not policy.is_static:
        raise InputError("policy", "name", f"{policy.name!r} is stateful; validate serves "
                         "static policies", "validate one of its levels")
    table = policy.exit_index(trace, np.arange(trace.n_samples)).astype(np.int64)
    return {"kind": "table", "thresholds": [float("inf")] * (k - 1), "active": active}, table


def own_test_inputs(trace: ExitTrace, own: dict[str, Any]) -> tuple[np.ndarray, list]:
    """(test sample ids, input parts) of a user's model: the data factory's test batches, in
    the order ``traces record --data-factory`` recorded them (val first, then test), each
    batch checked as ``traces record`` checks it (:func:`offramp.traces.own.factory_batches`)."""
    import torch

    from offramp.common.factory import call_factory
    from offramp.profiling.segments import flatten
    from offramp.traces.own import check_loaders, factory_batches

    source = own["data_factory"]
    loaders = call_factory(source, own.get("data_args", []), "--data-factory", "--data-arg")
    check_loaders(loaders, source)
    parts: list[list[np.ndarray]] = []
    labels = []
    for _, x, y in factory_batches(loaders, "test", source):
        pieces = [t.detach().cpu().numpy() for t in flatten(x)]
        parts = [[] for _ in pieces] if not parts else parts
        for i, p in enumerate(pieces):
            parts[i].append(p)
        labels.append(np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1))
    ids = trace.indices("test")
    got = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    if got.shape != ids.shape or not np.array_equal(got, trace.labels[ids]):
        raise InputError(own["data_factory"], "test", "its test batches are not the samples "
                         "the trace's test split holds", "validate with the data factory the "
                         "trace was recorded with (same arguments)")
    return ids, [np.concatenate(p) for p in parts]


def test_inputs(trace: ExitTrace, data_path: str | None = None) -> tuple[np.ndarray, list]:
    """(test sample ids, input parts indexed like the ids) of the trace's real test split."""
    from offramp.traces.models import DATASETS_OF
    from offramp.traces.train import load_data

    dataset = trace.meta.get("dataset")
    data = load_data(trace.model_id, data_path,
                     dataset if dataset in DATASETS_OF.get(trace.model_id, ()) else None)
    ids = trace.indices("test")
    n_val = int(trace.meta.get("split_sizes", {}).get("val", trace.indices("val").size))
    rows = ids - n_val
    labels = np.asarray(data.test.y)[rows]
    if not np.array_equal(labels, trace.labels[ids]):
        raise InputError(trace.source, "labels", "the dataset's test labels do not match the "
                         "trace's", "validate with the dataset the trace was recorded on")
    if trace.model_id == "fmnist-resnet":
        from offramp.traces.models import images_to_tensor

        return ids, [images_to_tensor(data.test.x[rows]).numpy().astype(np.float32)]
    if trace.model_id == "rt-minilm6":
        from offramp.traces.models import build_model

        tok = build_model("rt-minilm6", pretrained=False).tokenizer
        enc = tok([data.test.x[r] for r in rows], truncation=True, padding="max_length",
                  max_length=64, return_tensors="np")
        return ids, [enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)]
    raise InputError(trace.source, "model_id", f"no real inputs for {trace.model_id!r}",
                     "validate fmnist-resnet or rt-minilm6")


def _recorded(trace: ExitTrace) -> str | None:
    """The shipped checkpoint the trace was recorded from where it is not its model's default
    one (fmnist-c's, not the clean fmnist model's); None otherwise."""
    from offramp.traces.shipped import recorded_checkpoint

    found = recorded_checkpoint(trace)
    return str(found) if found is not None and found.name != f"{trace.model_id}.pt" else None


def _served_by_the_loop(modes: list[str]) -> None:
    """One clear error for an exit mode the real serving loop cannot serve."""
    unserved = [m for m in modes if not ExitMode.parse(m).real_loop_serves]
    if unserved:
        raise InputError("--modes or server.exit_mode", unserved[0], "the real serving loop "
                         "runs one stage at a time, so it cannot run a lookup beside the "
                         "backbone", "serve keep (the same batches with synchronous lookups); "
                         "async is simulated only")


def prepare(cfg: StudyConfig, base: Path | None, out: Path, device: str, modes: list[str],
            loads: list[dict[str, float]], repeats: int, requests: int, precision: str = "fp32",
            profile_given: Path | None = None, calib_requests: int = 1500,
            profile_runs: int = 30, own: dict[str, Any] | None = None,
            served_requests: int = 2000, served_seconds: float = 0.0, core: int | None = None,
            checkpoint: str | None = None, seq_len: int = 64) -> Path:
    """Write the plan folder for the real side; return it. ``own``: a user's model
    (``model_factory``, ``model_args``, ``data_factory``, ``data_args``) instead of a shipped
    one. A served stream holds ``served_requests``, or as many as arrive in ``served_seconds``
    at its rate where that is more (at most ``requests``)."""
    from offramp.core.execution import no_exit
    from offramp.profiling.format import save_profile
    from offramp.profiling.latency import stage_costs
    from offramp.sim.service import ServiceTimes

    _served_by_the_loop(modes)
    cfg = resolve_workload(cfg, base)
    trace = load_study_trace(cfg, base)
    study_profile = load_study_profile(cfg, trace, base)
    policy = fit_policy(cfg, trace, study_profile, base)
    rule, table = exit_rule(policy, trace)
    ids, parts = own_test_inputs(trace, own) if own else test_inputs(trace)
    checkpoint = checkpoint if checkpoint is not None or own else _recorded(trace)
    from offramp.profiling.shipped import resolve_profile

    guess = study_profile if profile_given is None else resolve_profile(str(profile_given))
    mb = cfg.server.max_batch
    svc = ServiceTimes.from_latency(stage_costs(guess), n_exits=trace.n_exits, max_batch=mb,
                                    mode=ExitMode.KEEP, sampled=False)
    full_ms = 1000.0 * svc.plan_s(no_exit(mb, trace.n_exits))
    plan = ValidationPlan.from_dict(json.loads(json.dumps({
        "model": trace.model_id, "trace": trace.source, "device": device, "precision": precision,
        "max_batch": mb, "max_wait_ms": cfg.server.max_wait_ms, "rule": rule,
        "discipline": cfg.server.discipline, "stage_max_wait_ms": cfg.server.stage_max_wait_ms,
        "policy": policy.get_params(), "modes": modes, "loads": loads, "repeats": repeats,
        "requests": requests, "calib_requests": calib_requests,
        "served_requests": served_requests, "served_seconds": served_seconds,
        "seed": cfg.run.seed, "warmup_fraction": cfg.run.warmup_fraction,
        "rate0_rps": 1000.0 * mb / full_ms, "measure_profile": profile_given is None,
        "profile_batches": sorted({b for b in PROFILE_BATCHES if b < mb} | {1, mb}),
        "profile_runs": profile_runs, "command": shlex.join(["offramp", *sys.argv[1:]]),
        "core": core, "checkpoint": checkpoint, "seq_len": seq_len,
        **({"model_factory": own["model_factory"],
            "model_args": list(own.get("model_args", []))} if own else {})}, default=_json)))
    _check_folder(out, plan)
    # Only now, with the plan known to fit this folder, is anything written.
    out.mkdir(parents=True, exist_ok=True)
    (out / "real").mkdir(exist_ok=True)
    if table is not None:
        with atomic_path(out / "exit_table.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, table)
    with atomic_path(out / "inputs.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, ids=ids, n_parts=len(parts),
                            **{f"x{i}": p for i, p in enumerate(parts)})
    if profile_given is not None:
        save_profile(guess, out / "real" / "profile.json")
    with atomic_path(out / "plan.json") as tmp:
        tmp.write_text(plan.to_json())
    return out


def _check_folder(out: Path, plan: ValidationPlan) -> None:
    """Refuse a folder that holds real runs of a different plan (before anything is written)."""
    old = out / "plan.json"
    if (out / "real" / "manifest.json").exists() and old.exists():
        try:
            same = plan.same_plan(ValidationPlan.from_json(old.read_text()))
        except PlanError:
            same = False
        if not same:
            raise InputError(out, "plan.json", "this folder holds real runs of a different plan",
                             "choose a new -o folder (or delete this one) to run this plan")


def _json(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))
