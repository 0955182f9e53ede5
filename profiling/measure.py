"""Time every stage of a multi-exit model at each batch size and build a latency profile.

For each batch size: every segment and head, the compaction gather after each exit but the last
(``compact``: b survivors gathered from a larger batch's activation) and the serving loop's
per-batch host work (``overhead``, k = 0). Timing is CUDA events on a GPU and
``time.perf_counter_ns`` on the CPU, after warm-up, garbage collection off while timing.
This module runs on a bare CUDA box: it imports torch, numpy and the standard library only.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from offramp.common.errors import InputError
from offramp.core.modes import StageKind

from .backends.base import Backend, Call

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


def times_loop_stages(backend_name: str) -> bool:
    """Whether a backend's profile times the serving loop's own stages in the loop (only the
    eager backend has a serving loop here)."""
    return backend_name == "eager"


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
