"""The real side of ``offramp validate``: serve an arrival stream through the real model.

A single-replica dynamic batcher drives :class:`ServingLoop` by the simulator's own batching
rule (:func:`offramp.core.batching.dispatch`): requests become visible at their arrival times
(wall clock from the run's start); a batch goes when ``max_batch`` have arrived, when the
oldest has waited ``max_wait_ms``, or at once when the stream has ended, and never before the
loop is free. The loop sleeps until that time (as an event-driven batcher is woken) and never
dispatches a request before it arrived. Each request carries the real test input of its
sample id.

Also here: the busy-fraction calibration (secant steps on the rate with short real runs) and
the CPU pinning. Measurement side: torch, numpy and the standard library only.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from offramp.core.batching import dispatch
from offramp.core.execution import batch_plan
from offramp.core.modes import StageKind

from .serving_loop import ServingLoop


def pin_to_one_core(core: int | None = None) -> int | None:
    """Pin this process to one CPU core (the last allowed one by default); None if it cannot."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    core = allowed[-1] if core is None else core
    os.sched_setaffinity(0, {core})
    return core


def sleep_until(t_s: float, clock: Callable[[], float]) -> None:
    """Sleep, then spin for the last 0.3 ms (sleep alone overshoots by ~0.1 ms)."""
    while True:
        left = t_s - clock()
        if left <= 0:
            return
        if left > 0.0006:
            time.sleep(left - 0.0003)


def serve_stream(loop: ServingLoop, inputs: Callable[[int], Any], arrival_s: np.ndarray,
                 samples: np.ndarray, max_batch: int, max_wait_ms: float,
                 lead_in_s: float = 0.05) -> dict[str, np.ndarray]:
    """Serve one stream; per request and per batch timestamps (s from the run's start).

    ``inputs(sample_id)``: the request's model input (a batch of one). Returns arrays:
    per request ``arrival``, ``sample``, ``dispatch``, ``finish`` (dispatch + the timed stages
    up to the one that ends its exit), ``exit``, ``pred``, ``batch``; per batch
    ``batch_dispatch``, ``batch_finish`` (the loop free again), ``batch_sizes`` (n, K: batch
    size at each segment, 0 if not run), ``batch_reason`` (why it went: 0 full, 1 the oldest
    waited ``max_wait_ms``, 2 the stream had ended); per stage ``stage_batch``, ``stage_kind``
    (:attr:`StageKind.code`), ``stage_k``, ``stage_size``, ``stage_ms``.
    """
    arr = np.asarray(arrival_s, dtype=float)
    smp = np.asarray(samples, dtype=np.int64)
    wait = max_wait_ms / 1000.0
    payload = [inputs(int(s)) for s in smp]  # prepared before the clock starts
    # Python's garbage collector is paused while serving (collected and frozen first), as the
    # profiler times stages: one full collection of this process took 100-150 ms, a stall that
    # at 60% busy held 1% of the requests (docs/validation.md).
    gc_was_on = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        if loop.mode.rebatches:
            from .rebatch_loop import serve_rebatch

            return serve_rebatch(loop, payload, arr, smp, max_batch, wait, lead_in_s)
        return _serve(loop, payload, arr, smp, max_batch, wait, lead_in_s)
    finally:
        gc.unfreeze()
        if gc_was_on:
            gc.enable()


def _serve(loop: ServingLoop, payload: list, arr: np.ndarray, smp: np.ndarray, max_batch: int,
           wait: float, lead_in_s: float) -> dict[str, np.ndarray]:
    n, k_exits = arr.size, loop.k_exits
    arr_list = arr.tolist()
    out = {name: np.full(n, np.nan) for name in ("dispatch", "finish")}
    exits, preds, batch_of = (np.full(n, -1, dtype=np.int64) for _ in range(3))
    b_disp, b_fin, b_sizes, b_reason = [], [], [], []
    served: list[tuple] = []
    st_b, st_kind, st_k, st_size, st_ms = [], [], [], [], []
    origin = time.perf_counter() + lead_in_s

    def clock() -> float:
        return time.perf_counter() - origin

    i, end = 0, arr_list[-1]
    while i < n:
        # The batching rule gives when the batch goes and who is in it; the loop waits till then.
        due, j = dispatch(arr_list, i, clock(), max_batch, wait, end)
        sleep_until(due, clock)
        reason = 0 if j - i >= max_batch else (2 if j == n else 1)
        batch, ids = payload[i:j], smp[i:j].tolist()
        d = clock()
        run = loop.run(batch, ids)
        served.append((i, j, d, clock(), reason, run))
        i = j
    # The bookkeeping happens after the stream, so the loop spends no time on it while serving.
    for b, (i, j, d, t_end, reason, run) in enumerate(served):
        ms = [m for _, m in run.stages]
        going = tuple(sum(1 for e in run.exits if e > kk) for kk in range(k_exits - 1))
        plan = batch_plan(loop.mode, j - i, going, tuple(bool(a) for a in loop.active))
        # A request exited at k finishes when the stage that ends exit k does.
        ends = np.cumsum(ms) / 1000.0
        for r, (e, pr) in enumerate(zip(run.exits, run.preds, strict=True)):
            out["finish"][i + r] = d + float(ends[plan.ends[e] - 1])
            out["dispatch"][i + r] = d
            exits[i + r], preds[i + r], batch_of[i + r] = e, pr, b
        b_disp.append(d)
        b_reason.append(reason)
        b_fin.append(t_end)  # the loop is free again (includes what no stage timed)
        sizes = [0] * k_exits
        for (st, m) in run.stages:
            if st.kind is StageKind.SEGMENT:
                sizes[st.k] = st.batch
            st_b.append(b)
            st_kind.append(st.kind.code)
            st_k.append(st.k)
            st_size.append(st.batch)
            st_ms.append(m)
        b_sizes.append(sizes)
    return {"arrival": arr, "sample": smp, "dispatch": out["dispatch"], "finish": out["finish"],
            "exit": exits, "pred": preds, "batch": batch_of,
            "batch_dispatch": np.array(b_disp), "batch_finish": np.array(b_fin),
            "batch_sizes": np.array(b_sizes, dtype=np.int64).reshape(-1, k_exits),
            "batch_reason": np.array(b_reason, dtype=np.int64),
            "stage_batch": np.array(st_b, dtype=np.int64),
            "stage_kind": np.array(st_kind, dtype=np.int64),
            "stage_k": np.array(st_k, dtype=np.int64),
            "stage_size": np.array(st_size, dtype=np.int64), "stage_ms": np.array(st_ms)}


def busy_fraction(run: dict[str, np.ndarray], warmup_fraction: float = 0.1) -> float:
    """Share of the measured window (after warm-up) the loop was serving a batch."""
    n = run["arrival"].size
    cut = int(math.floor(n * warmup_fraction))
    t0, t1 = run["arrival"][cut:].min(), run["finish"][cut:].max()
    busy = np.clip(np.minimum(run["batch_finish"], t1) - np.maximum(run["batch_dispatch"], t0),
                   0, None)
    return float(busy.sum() / max(t1 - t0, 1e-12))


def poisson_stream(rate_rps: float, n: int, test_ids: Sequence[int], seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(arrival times s, sample ids) of ``n`` Poisson arrivals, samples from the test split."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1.0 / rate_rps, n))
    return times, rng.choice(np.asarray(test_ids), n)


def calibrate_rate(serve: Callable[[float], float], target: float, rate0: float,
                   steps: int = 3, tol: float = 0.03) -> tuple[float, list[tuple[float, float]]]:
    """The rate whose busy fraction is ``target``: secant steps in log-log from ``rate0``.

    ``serve(rate)`` runs a short real stream and returns its busy fraction. Returns (rate,
    the probes as (rate, busy fraction)).
    """
    probes = [(rate0, serve(rate0))]
    rate = rate0 * target / max(probes[0][1], 1e-6)  # first step: busy fraction ∝ rate
    for _ in range(steps if abs(probes[0][1] - target) > tol * target else 0):
        probes.append((rate, serve(rate)))
        if abs(probes[-1][1] - target) <= tol * target:
            break
        (r1, u1), (r2, u2) = probes[-2], probes[-1]
        slope = (math.log(max(u2, 1e-6)) - math.log(max(u1, 1e-6))) / (math.log(r2) - math.log(r1)) \
            if r1 != r2 else 1.0
        slope = min(max(slope, 0.3), 1.5)
        rate = r2 * math.exp((math.log(target) - math.log(max(u2, 1e-6))) / slope)
    best = min(probes, key=lambda p: abs(p[1] - target))
    return best[0], probes
