"""The serving loop's own stages, timed inside the real loop (:func:`measure_loop`): what a
batch costs beyond its isolated stages, how stage noise hangs together, what waking costs.
This module runs on a bare CUDA box: it imports torch, numpy and the standard library only.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from offramp.core.modes import StageKind

from .backends.base import Backend
from .measure import Progress, RunPolicy, summarize
from .served import ar1_from_series


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
    loop, leaver = _loops(backend, max(batches), rule)
    requests = {b: singles(example(b), b) for b in batches}
    got = _serve_shuffled(loop, leaver, requests, batches, policy)
    by_key = {(r["kind"], r["k"], r["batch"]): r for r in isolated}
    rows, residual = _stage_residuals(got["times"], batches, by_key)
    if progress is not None:
        for b in batches:
            progress(StageKind.OVERHEAD, 0, b)
            for k in range(backend.n_exits - 1):
                progress(StageKind.CHECK, k, b)
                progress(StageKind.HANDOFF, k, b)
    residual.update(_compact_residuals(got["compact"], isolated, backend.n_exits))
    residual["wake_ms"] = got["wake"]
    residual["batch_tail_ms"] = {"batch": list(batches),
                                 "ms": [round(max(0.0, float(np.median(got["tails"][b]))), 6)
                                        for b in batches]}
    residual["stage_noise_corr"] = stage_noise_corr(got["per_batch"], got["times"])
    return rows, residual


def _loops(backend: Backend, top: int, rule: str) -> tuple[Any, Any]:
    """The loop that times every stage (no sample exits) and the one in which sample s < K-1
    leaves at exit s (at each early exit one row leaves and the rest go on: compactions)."""
    from .serving_loop import ServingLoop

    n_exits = backend.n_exits
    if rule == "table":
        loop = ServingLoop(backend.model, backend.device, backend.dtype, "shrink",
                           [0.0] * (n_exits - 1), rule="table", table=[n_exits - 1] * top)
    else:
        loop = ServingLoop(backend.model, backend.device, backend.dtype, "shrink",
                           [NEVER_EXIT[rule]] * (n_exits - 1), rule=rule)
    leaver = ServingLoop(backend.model, backend.device, backend.dtype, "shrink",
                         [0.0] * (n_exits - 1), rule="table",
                         table=[min(s, n_exits - 1) for s in range(top)])
    return loop, leaver


def _serve_shuffled(loop: Any, leaver: Any, requests: dict[int, list], batches: Sequence[int],
                    policy: RunPolicy) -> dict[str, Any]:
    """Serve batches of every size in one shuffled order (fixed seed), as a loop meets them, so
    each stage is timed after batches of other sizes, not after copies of itself; every other
    batch is followed by one of the compacting kind. Garbage collection off while timing."""
    ids = {b: list(range(b)) for b in batches}
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
            if n % 2 == 0 and b > 1:
                for st, ms in leaver.run(requests[b], ids[b]).stages:
                    if st.kind is StageKind.COMPACT:
                        compact.setdefault((st.k, st.batch), []).append(ms)
        wake = measure_wake(loop, requests, totals)
    finally:
        if was_enabled:
            gc.enable()
    return {"times": times, "tails": tails, "compact": compact, "per_batch": per_batch,
            "wake": wake}


def _stage_residuals(times: dict[tuple[str, int, int], list[float]], batches: Sequence[int],
                     by_key: dict[tuple[str, int, int], dict[str, Any]]
                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The loop stages' rows, and per (kind, k) of the model's stages timed in isolation too:
    the median residual (in ms and % of isolated) and the served p50 and p99 per size."""
    rows, resid, served = [], {}, {}
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
    residual = {key: {"median_ms": round(float(np.median(v)), 6),
                      "median_pct_of_isolated": round(100 * float(np.median(
                          [d / by_key[key.split()[0], int(key.split()[1]), b]["p50_ms"]
                           for d, b in zip(v, batches, strict=True)])), 2)}
                for key, v in resid.items()}
    for key, pts in served.items():
        residual[key]["served_p50_ms"] = [p[:2] for p in pts]
        residual[key]["served_p99_ms"] = [[p[0], p[2]] for p in pts]
    return rows, residual


def _compact_residuals(compact: dict[tuple[int, int], list[float]],
                       isolated: list[dict[str, Any]], n_exits: int) -> dict[str, Any]:
    """Per early exit: the compaction's median residual over its isolated time and its served
    p50 and p99 per survivor count (sizes with at least 5 timings)."""
    iso_compact = {(r["k"], r["batch"]): r["p50_ms"] for r in isolated
                   if StageKind(r["kind"]) is StageKind.COMPACT}
    out = {}
    for k in range(n_exits - 1):
        pts = sorted((size, ts) for (kk, size), ts in compact.items() if kk == k and len(ts) >= 5)
        if not pts:
            continue
        diffs = [float(np.median(ts)) - iso_compact[k, size] for size, ts in pts
                 if (k, size) in iso_compact]
        out[f"compact {k}"] = {
            "median_ms": round(float(np.median(diffs)), 6) if diffs else 0.0,
            "served_p50_ms": [[size, round(float(np.median(ts)), 6)] for size, ts in pts],
            "served_p99_ms": [[size, round(float(np.percentile(ts, 99)), 6)] for size, ts in pts]}
    return out


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
    across = ar1_from_series(res.mean(axis=1)) if within > 0 else 0.0  # one home: served.py
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
