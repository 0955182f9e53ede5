"""Time every stage of a multi-exit model at each batch size and build a latency profile.

For each batch size: every segment and head, the compaction gather after each exit but the last
(``compact``: b survivors gathered from a larger batch's activation) and the serving loop's
per-batch host work (``overhead``, k = 0). Timing is CUDA events on a GPU and
``time.perf_counter_ns`` on the CPU, after warm-up, garbage collection off while timing.
This module runs on a bare CUDA box: it imports torch, numpy and the standard library only.
"""

from __future__ import annotations

import datetime as dt
import gc
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from offramp.common.errors import InputError
from offramp.common.machine import cpu_name
from offramp.core.modes import StageKind

from .backends import get_backend
from .backends.base import EXIT_THRESHOLD, Backend, Call
from .format import LatencyProfile, validate_profile
from .segments import flatten

Progress = Callable[[str, int, int], None]


def default_batches(max_batch: int = 256) -> list[int]:
    """Every size to 64, then steps of 8 to 128 and of 32 to 256, up to ``max_batch``."""
    sizes = list(range(1, 65)) + list(range(72, 129, 8)) + list(range(160, 257, 32))
    return [b for b in sizes if b <= max_batch]


def parse_batches(text: str) -> list[int]:
    """Batch sizes from ``"1-32,40,48-64:8"`` (``a-b`` every size, ``a-b:s`` every s-th)."""
    sizes: set[int] = set()
    fix = "write sizes like 1-32,40,48-64:8 (a-b: every size, a-b:s: step s)"
    for item in text.replace(" ", "").split(","):
        span, _, step = item.partition(":")
        lo, _, hi = span.partition("-")
        try:
            a, b, s = int(lo), int(hi or lo), int(step or 1)
        except ValueError:
            raise InputError("--batches", None, f"cannot read {item!r}", fix) from None
        if a < 1 or b < a or s < 1:
            raise InputError("--batches", None, f"{item!r} is not an increasing range of "
                             "positive sizes", fix)
        sizes.update(range(a, b + 1, s))
    return sorted(sizes)


@dataclass(frozen=True)
class RunPolicy:
    """How many times each (stage, batch size) runs.

    ``warmup`` untimed runs (stopping early after ``warmup_s`` seconds, at least 2); then
    ``runs`` timed runs, or ``slow_runs`` where the warm-up median exceeds ``slow_ms``.
    """

    runs: int = 100
    warmup: int = 10
    warmup_s: float = 1.0
    slow_ms: float = 50.0
    slow_runs: int | None = None

    def runs_for(self, estimate_ms: float) -> int:
        if self.slow_runs is not None and estimate_ms > self.slow_ms:
            return min(self.runs, self.slow_runs)
        return self.runs


class HostTimer:
    """Wall-clock time of a call on the host (``perf_counter_ns``), in ms.

    With ``cuda``, pending GPU work is finished before the clock starts.
    """

    def __init__(self, cuda: bool = False):
        self.cuda = cuda

    def __call__(self, fn: Call) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t0) / 1e6


class CudaTimer:
    """GPU time of a call between two CUDA events on the current stream, in ms."""

    def __init__(self) -> None:
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self, fn: Call) -> float:
        self.start.record()
        fn()
        self.end.record()
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))


def time_call(fn: Call, timer: Callable[[Call], float], policy: RunPolicy) -> list[float]:
    """Warm up, then time ``fn`` as often as ``policy`` says; the timed runs in ms."""
    warm: list[float] = []
    t_end = time.perf_counter() + policy.warmup_s
    while len(warm) < max(policy.warmup, 2):
        warm.append(timer(fn))
        if len(warm) >= 2 and time.perf_counter() > t_end:
            break
    n = policy.runs_for(float(np.median(warm[1:])))
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return [timer(fn) for _ in range(n)]
    finally:
        if was_enabled:
            gc.enable()


def summarize(times_ms: Sequence[float]) -> dict[str, Any]:
    """p50, mean, p99 and standard deviation (ms) and the number of runs."""
    a = np.asarray(times_ms, dtype=float)
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 6),
            "mean_ms": round(float(a.mean()), 6),
            "p99_ms": round(float(np.percentile(a, 99)), 6),
            "std_ms": round(std, 6), "runs": int(a.size)}


def stage_plan(n_exits: int, batches: Sequence[int], loop: bool = False
               ) -> list[tuple[str, int, int]]:
    """Every (kind, k, batch) measured, in measurement order.

    ``loop``: the serving loop's own stages (overhead, check, handoff) are timed in the loop,
    after the isolated stages, instead of an isolated overhead.
    """
    plan = []
    for b in batches:
        for k in range(n_exits):
            plan += [(StageKind.SEGMENT, k, b), (StageKind.HEAD, k, b)]
            if k < n_exits - 1:
                plan.append((StageKind.COMPACT, k, b))
        if not loop:
            plan.append((StageKind.OVERHEAD, 0, b))
    if loop:
        for b in batches:
            plan += [(StageKind.OVERHEAD, 0, b)] + [(kind, k, b) for k in range(n_exits - 1)
                                                    for kind in (StageKind.CHECK, StageKind.HANDOFF)]
    return plan


def measure_stages(backend: Backend, example: Callable[[int], Any], batches: Sequence[int],
                   policy: RunPolicy, seed: int = 0, progress: Progress | None = None,
                   overhead: bool = True) -> list[dict[str, Any]]:
    """Profile rows for every stage of ``backend``'s model at each batch size.

    ``compact`` rows gather b rows, chosen at random, out of the activation of a batch of
    ``max(batches)``.
    """
    timers = {"host": HostTimer(cuda=backend.device == "cuda")}
    if backend.device == "cuda":
        timers["cuda"] = CudaTimer()
    n_exits, source = backend.n_exits, max(batches)
    rng = np.random.default_rng(seed)
    rows = []

    def record(kind: str, k: int, b: int, fn: Call) -> None:
        times = time_call(fn, timers[backend.timer(kind)], policy)
        rows.append({"kind": kind, "k": k, "batch": b, **summarize(times)})
        if progress is not None:
            progress(kind, k, b)

    with torch.inference_mode():
        src = backend.activations(example(source))
        for b in batches:
            acts = backend.activations(example(b))
            for k in range(n_exits):
                record("segment", k, b, backend.segment(k, acts[k]))
                record("head", k, b, backend.head(k, acts[k + 1]))
                if k < n_exits - 1:
                    index = np.sort(rng.choice(source, size=b, replace=False)).tolist()
                    record("compact", k, b, backend.compact(k, src[k + 1], index))
            if overhead:
                record("overhead", 0, b, backend.overhead(backend.logits(acts[-1], n_exits - 1)))
            backend.release()
    return rows


def singles(batch: Any, b: int) -> list[Any]:
    """The b single-request inputs of an input batch (tensor or tuple of tensors)."""
    if isinstance(batch, torch.Tensor):
        return [batch[i:i + 1] for i in range(b)]
    return [tuple(t[i:i + 1] for t in batch) for i in range(b)]


LOOP_KINDS = (StageKind.OVERHEAD, StageKind.CHECK, StageKind.HANDOFF)


NEVER_EXIT = {"maxprob": float("inf"), "entropy": -1.0}


def measure_loop(backend: Backend, example: Callable[[int], Any], batches: Sequence[int],
                 policy: RunPolicy, isolated: list[dict[str, Any]],
                 progress: Progress | None = None, rule: str = "maxprob"
                 ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of the serving loop's own stages, timed inside the real loop, and the residuals.

    Each batch size runs whole batches through :class:`ServingLoop` (exit mode ``shrink`` with
    every threshold at infinity: every exit decision is taken, nobody leaves, so every check and
    handoff runs at that size). Returns ``overhead`` (assemble the batch from single requests
    and place it), ``check`` and ``handoff`` rows, and per (kind, k) of ``segment`` and
    ``head``: the median over batch sizes of the in-loop time minus the isolated time, and the
    in-loop p50 and p99 at every size (``served_p50_ms``, ``served_p99_ms``: [[batch, ms], ...]);
    and ``stage_noise_corr`` (:func:`stage_noise_corr`). The batches of all sizes run in one
    shuffled order, as a serving loop meets them.

    ``rule``: the exit rule the loop will serve with (``maxprob``, ``entropy`` or ``table``),
    so each ``check`` costs what that rule's decision costs (with thresholds nobody meets).
    Also measured in the loop: ``compact`` (a second pass in which one sample leaves at each
    exit, so the survivors are gathered; its served p50 and p99 per survivor count) and
    ``batch_tail_ms``: per size, the loop's time around a batch that no stage holds (from the
    call to the end of its bookkeeping), which keeps the replica busy after the last stage.
    """
    from .serving_loop import ServingLoop

    n_exits = backend.n_exits
    top = max(batches)
    if rule == "table":
        loop = ServingLoop(backend.model, backend.device, backend.dtype, "shrink",
                           [0.0] * (n_exits - 1), rule="table", table=[n_exits - 1] * top)
    else:
        loop = ServingLoop(backend.model, backend.device, backend.dtype, "shrink",
                           [NEVER_EXIT[rule]] * (n_exits - 1), rule=rule)
    # Sample s < K-1 leaves at exit s: at each early exit one row leaves and the rest go on.
    leaver = ServingLoop(backend.model, backend.device, backend.dtype, "shrink",
                         [0.0] * (n_exits - 1), rule="table",
                         table=[min(s, n_exits - 1) for s in range(top)])
    ids = {b: list(range(b)) for b in batches}
    by_key = {(r["kind"], r["k"], r["batch"]): r for r in isolated}
    rows, resid = [], {}
    # Served as a loop serves: batches of every size in a shuffled order (fixed seed), so each
    # stage is timed after batches of other sizes, not after copies of itself.
    requests = {b: singles(example(b), b) for b in batches}
    plan: list[int] = []
    for b in batches:
        warm = [loop.run(requests[b], ids[b]) for _ in range(max(policy.warmup, 2))]
        for _ in range(2):
            leaver.run(requests[b], ids[b])
        plan += [b] * policy.runs_for(sum(ms for _, ms in warm[-1].stages))
    order = np.random.default_rng(0).permutation(len(plan))
    times: dict[tuple[str, int, int], list[float]] = {}
    totals: dict[int, list[float]] = {}
    tails: dict[int, list[float]] = {}
    compact: dict[tuple[int, int], list[float]] = {}
    per_batch: list[tuple[int, list[tuple[str, int, float]]]] = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for n, i in enumerate(order.tolist()):
            b = plan[i]
            t0 = time.perf_counter()
            stages = loop.run(requests[b], ids[b]).stages
            wall_ms = (time.perf_counter() - t0) * 1000.0
            totals.setdefault(b, []).append(sum(ms for _, ms in stages))
            tails.setdefault(b, []).append(wall_ms - totals[b][-1])
            per_batch.append((b, [(st.kind, st.k, ms) for st, ms in stages]))
            for st, ms in stages:
                times.setdefault((st.kind, st.k, b), []).append(ms)
            if n % 2 == 0 and b > 1:  # every other batch, one of the compacting kind
                for st, ms in leaver.run(requests[b], ids[b]).stages:
                    if st.kind is StageKind.COMPACT:
                        compact.setdefault((st.k, st.batch), []).append(ms)
        wake = measure_wake(loop, requests, totals)
    finally:
        if was_enabled:
            gc.enable()
    served: dict[str, list[list[float]]] = {}
    for b in batches:
        for (kind, k, bb), ts in times.items():
            if bb != b:
                continue
            if kind in LOOP_KINDS:
                rows.append({"kind": kind, "k": k, "batch": b, **summarize(ts)})
            elif (kind, k, b) in by_key:
                resid.setdefault(f"{kind} {k}", []).append(
                    float(np.median(ts)) - by_key[kind, k, b]["p50_ms"])
                served.setdefault(f"{kind} {k}", []).append(
                    [b, round(float(np.median(ts)), 6), round(float(np.percentile(ts, 99)), 6)])
        if progress is not None:
            progress(StageKind.OVERHEAD, 0, b)
            for k in range(backend.n_exits - 1):
                progress(StageKind.CHECK, k, b)
                progress(StageKind.HANDOFF, k, b)
    residual = {key: {"median_ms": round(float(np.median(v)), 6),
                      "median_pct_of_isolated": round(100 * float(np.median(
                          [d / by_key[key.split()[0], int(key.split()[1]), b]["p50_ms"]
                           for d, b in zip(v, batches, strict=True)])), 2)}
                for key, v in resid.items()}
    for key, pts in served.items():
        residual[key]["served_p50_ms"] = [p[:2] for p in pts]
        residual[key]["served_p99_ms"] = [[p[0], p[2]] for p in pts]
    iso_compact = {(r["k"], r["batch"]): r["p50_ms"] for r in isolated
                   if StageKind(r["kind"]) is StageKind.COMPACT}
    for k in range(n_exits - 1):
        pts = sorted((size, ts) for (kk, size), ts in compact.items() if kk == k and len(ts) >= 5)
        if not pts:
            continue
        diffs = [float(np.median(ts)) - iso_compact[k, size] for size, ts in pts
                 if (k, size) in iso_compact]
        residual[f"compact {k}"] = {
            "median_ms": round(float(np.median(diffs)), 6) if diffs else 0.0,
            "served_p50_ms": [[size, round(float(np.median(ts)), 6)] for size, ts in pts],
            "served_p99_ms": [[size, round(float(np.percentile(ts, 99)), 6)] for size, ts in pts]}
    residual["wake_ms"] = wake
    residual["batch_tail_ms"] = {"batch": list(batches),
                                 "ms": [round(max(0.0, float(np.median(tails[b]))), 6)
                                        for b in batches]}
    residual["stage_noise_corr"] = stage_noise_corr(per_batch, times)
    return rows, residual


def stage_noise_corr(per_batch: Sequence[tuple[int, list[tuple[str, int, float]]]],
                     times: dict[tuple[str, int, int], list[float]]) -> dict[str, float]:
    """How a loop's stage times hang together, from the batches it served in order: each
    segment's and head's log(time / its median at that size); ``within``: the mean pairwise
    correlation of those across one batch's stages; ``across``: φ of the batches' mean
    residual, whose autocorrelation at lag L is fitted as c·φ^L (L = 1..10): how long a slow
    spell lasts. Both in [0, 1); 0 without enough batches."""
    medians = {key: float(np.median(ts)) for key, ts in times.items()}
    keys = sorted({(kind, k) for _, stages in per_batch for kind, k, _ in stages
                   if StageKind(kind).is_model})
    rows = []
    for b, stages in per_batch:
        got = {(kind, k): ms for kind, k, ms in stages if StageKind(kind).is_model}
        if len(got) == len(keys) and all(got[key] > 0 and medians[(*key, b)] > 0 for key in keys):
            rows.append([math.log(got[key] / medians[(*key, b)]) for key in keys])
    if len(rows) < 50 or len(keys) < 2:
        return {"within": 0.0, "across": 0.0}
    res = np.array(rows)
    c = np.corrcoef(res.T)
    off = c[~np.eye(len(keys), dtype=bool)]
    off = off[np.isfinite(off)]
    within = float(np.clip(off.mean(), 0.0, 0.99)) if off.size else 0.0
    mean = res.mean(axis=1) - res.mean()
    lags = np.arange(1, 11)
    ac = np.array([np.corrcoef(mean[:-lag], mean[lag:])[0, 1] for lag in lags])
    ok = np.isfinite(ac) & (ac > 0.02)
    across = 0.0
    if within > 0 and ok.sum() >= 2:
        slope = np.polyfit(lags[ok], np.log(ac[ok]), 1)[0]
        across = float(np.clip(math.exp(slope), 0.0, 0.99))
    return {"within": round(within, 4), "across": round(across, 4)}


WAKE_IDLE_MS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)


def measure_wake(loop: Any, requests: dict[int, list], totals: dict[int, list[float]],
                 reps: int = 40) -> dict[str, Any]:
    """What a batch costs more after the loop slept: per size (the smallest, a middle one and
    the largest measured) and idle time, the median batch time after a sleep of that long
    minus the median batch time of the same size served right after another batch (ms). The
    cells, the back-to-back ones among them, run ``reps`` times each in one shuffled order,
    so a drift of the machine during the measurement moves both alike; per size the extra is
    made non-decreasing in the idle time (a longer sleep never wakes a warmer core) and >= 0."""
    sizes = sorted(totals)
    pick = sorted({sizes[0], sizes[len(sizes) // 2], sizes[-1]})
    cells = [(b, idle) for b in pick for idle in (0.0, *WAKE_IDLE_MS)] * reps
    got: dict[tuple[int, float], list[float]] = {}
    for i in np.random.default_rng(1).permutation(len(cells)).tolist():
        b, idle = cells[i]
        if idle > 0:
            time.sleep(idle / 1000.0)
        else:  # back to back: right after a batch of the same size, as the base
            loop.run(requests[b], list(range(b)))
        got.setdefault((b, idle), []).append(
            sum(ms for _, ms in loop.run(requests[b], list(range(b))).stages))
    extra = []
    for b in pick:
        base = float(np.median(got[b, 0.0]))
        row = np.maximum.accumulate([max(0.0, float(np.median(got[b, idle])) - base)
                                     for idle in WAKE_IDLE_MS])
        extra.append([round(float(x), 6) for x in row])
    return {"batch": pick, "idle_ms": list(WAKE_IDLE_MS), "extra_ms": extra}


def nvidia_driver() -> str:
    """The NVIDIA driver version, or ``unknown``."""
    try:
        for line in Path("/proc/driver/nvidia/version").read_text().splitlines():
            if "Kernel Module" in line:
                return line.split("Kernel Module", 1)[1].split()[0]
    except (OSError, IndexError):
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def device_info(device: str) -> dict[str, Any]:
    """What the profile was measured on: device name, driver, host CPU and core count."""
    if device == "cuda":
        return {"device": torch.cuda.get_device_name(), "driver": nvidia_driver(),
                "host_cpu": cpu_name(), "cpu_count": os.cpu_count()}
    return {"device": cpu_name(), "driver": "n/a (CPU)", "host_cpu": cpu_name(),
            "cpu_count": os.cpu_count()}


def software_versions(backend: Backend) -> dict[str, str]:
    """Python, torch, numpy, the OS and the backend's own libraries."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        offramp = version("offramp")
    except PackageNotFoundError:
        offramp = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "os": f"{platform.system()} {platform.release()}",
            "offramp": offramp, **backend.software()}


def input_description(example: Any) -> list[dict[str, Any]]:
    """Per-sample shape and dtype of each (flattened) model input."""
    return [{"shape": list(t.shape[1:]), "dtype": str(t.dtype).removeprefix("torch.")}
            for t in flatten(example)]


def profile_model(model: nn.Module, backend_name: str, device: str, precision: str,
                  example: Callable[[int], Any], batches: Sequence[int], policy: RunPolicy,
                  command: str, extra_meta: dict[str, Any] | None = None,
                  workdir: str | Path | None = None,
                  progress: Progress | None = None, loop_rule: str = "maxprob"
                  ) -> LatencyProfile:
    """Measure ``model`` with one backend and return a validated :class:`LatencyProfile`.

    ``loop_rule``: the exit rule whose decision the in-loop ``check`` stage times (see
    :func:`measure_loop`).
    ``example(b)`` gives an input batch of size b; ``command`` is recorded as how the profile
    was produced; ``extra_meta`` (e.g. weights, thread count) is merged into the metadata.
    """
    batches = sorted(set(batches))
    backend = get_backend(backend_name)(model, device, precision, workdir=workdir)
    backend.setup(example(2), batches)
    in_loop = backend_name == "eager"
    rows = measure_stages(backend, example, batches, policy, progress=progress,
                          overhead=not in_loop)
    loop_meta: dict[str, Any] = {"loop_stages": f"not measured: backend {backend_name} has no "
                                 "serving loop here; overhead is the isolated exit check"}
    if in_loop:
        loop_rows, residual = measure_loop(backend, example, batches, policy, rows, progress,
                                           rule=loop_rule)
        wake = residual.pop("wake_ms")
        corr = residual.pop("stage_noise_corr")
        tail = residual.pop("batch_tail_ms")
        order = {key: i for i, key in enumerate(stage_plan(backend.n_exits, batches, True))}
        rows = sorted(rows + loop_rows, key=lambda r: order[r["kind"], r["k"], r["batch"]])
        loop_meta = {"loop_stages": "overhead, check and handoff timed inside the serving loop "
                     "(offramp.profiling.serving_loop, exit mode shrink, no sample exits)",
                     "in_loop_residual_ms": residual, "wake_ms": wake,
                     "stage_noise_corr": corr, "batch_tail_ms": tail, "loop_rule": loop_rule}
    inputs = input_description(example(1))
    meta = {
        "model_id": getattr(model, "model_id", type(model).__name__),
        "n_exits": backend.n_exits,
        "exit_names": list(getattr(model, "exit_names", [])),
        **device_info(device),
        "torch": torch.__version__,
        "backend": backend_name,
        "precision": precision,
        "input_shape": inputs[0]["shape"],
        "inputs": inputs,
        "software": software_versions(backend),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "produced_by": {"command": command},
        "synthetic": False,
        "timer": "CUDA events (overhead: perf_counter_ns)" if device == "cuda"
        else "perf_counter_ns",
        "torch_threads": torch.get_num_threads(),
        "run_policy": asdict(policy),
        "batches": list(batches),
        "compact_source_batch": max(batches),
        "overhead_stage": "assemble the batch from single requests and place it on the device"
                          if backend_name == "eager" else f"softmax max >= {EXIT_THRESHOLD} on the "
                          "last head's logits, mask to host, survivor indices back to the device",
        "check_stage": "softmax max >= the exit's threshold, mask to host, survivor indices "
                       "back to the device",
        **loop_meta,
        "backend_details": backend.describe(),
        **(extra_meta or {}),
    }
    profile = LatencyProfile(rows=rows, meta=meta)
    validate_profile(profile)
    return profile
