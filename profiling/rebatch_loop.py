"""``exit_mode: rebatch`` in the real serving loop: survivors batched again across batches.

One replica, stage queues on one device, by the same rule the simulator runs
(:mod:`offramp.core.rebatching`): the model is cut into stages at the consulted exits; requests
enter stage 0 through the dynamic batcher; after a stage its leavers finish and its survivors'
activation rows wait in front of the next stage, where survivors of other batches join them.
Whenever the loop is free it runs one ready stage (chosen by the discipline) or sleeps until
the next arrival or deadline. A later stage's batch starts with the gather of its survivors'
rows from the batches they came from (``compact``; ``handoff`` where it is one earlier batch
intact). Every stage is timed like the batch loop's (:class:`StageClock`). torch, numpy and
the standard library only (runs on a bare CUDA box).
"""

from __future__ import annotations

import time
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from offramp.core.modes import StageKind
from offramp.core.rebatching import Layout, cut, pick, stage_ready, stage_steps

from .backends.torch_common import gather
from .real_runs import sleep_until
from .serving_loop import Pass, ServingLoop, StageClock, stack

INF = float("inf")
FULL, WAITED, ENDED, NOTHING_UPSTREAM = 0, 1, 2, 3  # why a stage batch went (batch_reason)


@dataclass
class Survivor:
    """A request waiting in front of a stage: since when, its stage batch and row there."""

    req: int
    since: float
    src: int
    row: int


@dataclass
class StageRun:
    """One stage batch as served: which stage, its requests, who left at its exit (exit and
    prediction per request, -1 for those going on), the survivors' rows and its timed stages."""

    stage: int
    reqs: list[int]
    exits: list[int]
    preds: list[int]
    going_rows: list[int]
    stages: list[tuple[Any, float]]


class Rebatcher:
    """The stage queues of one replica serving ``loop``'s model in ``rebatch`` mode."""

    def __init__(self, loop: ServingLoop, payload: list, samples: list[int]):
        self.loop, self.payload, self.samples = loop, payload, samples
        self.plan: Layout = cut(loop.active)
        self.waiting: dict[int, list[Survivor]] = {j: [] for j in range(1, len(self.plan.ends))}
        self.acts: dict[int, Any] = {}      # stage batch -> activation its survivors wait in
        self.left: dict[int, int] = {}      # stage batch -> survivors not yet taken
        self.intact: dict[int, int] = {}    # stage batch -> its size where nobody left it

    def ready(self, now: float, arr: list[float], i: int, arrived: int, max_batch: int,
              wait_s: float, stage_wait_s: float) -> list[tuple[int, float, int]]:
        """The stages that may run now: (stage, since when its first waits, how many)."""
        out = []
        if arrived > i and (arrived - i >= max_batch or arrived == len(arr)
                            or now >= arr[i] + wait_s):
            out.append((0, arr[i], min(arrived - i, max_batch)))
        for j, w in self.waiting.items():
            if stage_ready(len(w), w[0].since if w else 0.0, now, max_batch, stage_wait_s,
                           self.upstream(j, i, arrived)):
                out.append((j, w[0].since, min(len(w), max_batch)))
        return out

    def upstream(self, j: int, i: int, arrived: int) -> bool:
        """Whether anything could still join stage j: an arrived request not yet taken, or a
        survivor waiting in front of an earlier stage (on one replica nothing else runs)."""
        return arrived > i or any(self.waiting[x] for x in range(1, j))

    def deadline(self, arr: list[float], i: int, arrived: int, wait_s: float,
                 stage_wait_s: float) -> float:
        """When something may next become ready: an arrival or a wait running out."""
        times = [w[0].since + stage_wait_s for w in self.waiting.values() if w]
        if arrived > i:
            times.append(arr[i] + wait_s)
        if arrived < len(arr):
            times.append(arr[arrived])
        return min(times, default=INF)

    @torch.inference_mode()
    def run_stage(self, j: int, reqs: list[int], taken: list[Survivor], sb: int) -> StageRun:
        """Run stage j on ``reqs`` (stage 0: their inputs; later: the ``taken`` survivors'
        rows), as stage batch ``sb``; every stage timed."""
        loop, plan, b = self.loop, self.plan, len(reqs)
        clock = StageClock(loop.device)
        clock.mark()
        srcs = sorted({s.src for s in taken}, key=[s.src for s in taken].index)
        intact = len(srcs) == 1 and self.intact.get(srcs[0]) == b
        steps = stage_steps(plan, j, b, intact, loop.k_exits)
        p = Pass([self.payload[r] for r in reqs] if j == 0 else [None] * b,
                 [self.samples[r] for r in reqs])
        if j == 0:
            loop.step(steps[0], p)
        elif intact:
            p.act = loop.handoff(steps[0].k, self.acts[srcs[0]])
        else:
            parts = [gather(self.acts[src], torch.tensor(
                [s.row for s in taken if s.src == src], device=loop.device)) for src in srcs]
            p.act = parts[0] if len(parts) == 1 else stack(parts)
        clock.mark()
        for st in steps[1:]:
            loop.step(st, p)
            clock.mark()
        self._release(taken)
        k = plan.ends[j]
        if k == loop.k_exits - 1:
            loop.last_exit(k, p)
            going: list[int] = []
        else:
            going = p.keep.tolist()
            if going:
                self.acts[sb], self.left[sb] = p.act, len(going)
        if len(going) == b:
            self.intact[sb] = b
        return StageRun(j, reqs, p.exits, p.preds, going,
                        list(zip(steps, clock.elapsed_ms(), strict=True)))

    def _release(self, taken: list[Survivor]) -> None:
        """Drop an earlier batch's activation once all its survivors have been taken."""
        for s in taken:
            self.left[s.src] -= 1
            if not self.left[s.src]:
                del self.acts[s.src], self.left[s.src]
                self.intact.pop(s.src, None)


def serve_rebatch(loop: ServingLoop, payload: list, arr: np.ndarray, smp: np.ndarray,
                  max_batch: int, wait: float, lead_in_s: float) -> dict[str, np.ndarray]:
    """Serve one stream in ``rebatch`` mode (the loop's ``discipline`` and ``stage_wait_ms``);
    the same arrays as the batch loop, one batch row per stage batch, plus ``batch_stage``."""
    arr_list, n = arr.tolist(), arr.size
    rb = Rebatcher(loop, payload, smp.tolist())
    stage_wait = (loop.stage_wait_ms if loop.stage_wait_ms is not None else wait * 1000) / 1000
    served: list[tuple[StageRun, float, float, int]] = []
    origin = time.perf_counter() + lead_in_s

    def clock() -> float:
        return time.perf_counter() - origin

    i = 0
    while i < n or any(rb.waiting.values()):
        now = clock()
        arrived = bisect_right(arr_list, now)
        ready = rb.ready(now, arr_list, i, arrived, max_batch, wait, stage_wait)
        if not ready:
            sleep_until(rb.deadline(arr_list, i, arrived, wait, stage_wait), clock)
            continue
        j = pick(ready, loop.discipline)
        count = ready[[x[0] for x in ready].index(j)][2]
        if j == 0:
            reqs, taken = list(range(i, i + count)), []
            reason = FULL if count >= max_batch else (ENDED if arrived == n else WAITED)
            i += count
        else:
            w = rb.waiting[j]
            reason = FULL if count >= max_batch else (
                WAITED if rb.upstream(j, i, arrived) else NOTHING_UPSTREAM)
            taken, rb.waiting[j] = w[:count], w[count:]
            reqs = [s.req for s in taken]
        sb, d = len(served), clock()
        run = rb.run_stage(j, reqs, taken, sb)
        t_end = clock()
        if run.going_rows:  # queued when the stage's decision was taken, as the simulator has it
            done = d + sum(ms for _, ms in run.stages) / 1000.0
            rb.waiting[j + 1].extend(Survivor(reqs[row], done, sb, row) for row in run.going_rows)
        served.append((run, d, t_end, reason))
    return _records(served, arr, smp, loop.k_exits)


def _records(served: list, arr: np.ndarray, smp: np.ndarray, k_exits: int) -> dict[str, np.ndarray]:
    """The stream's arrays from its stage batches (after serving: no bookkeeping meanwhile)."""
    n = arr.size
    dispatch, finish = np.full(n, np.nan), np.full(n, np.nan)
    exits, preds, batch_of = (np.full(n, -1, dtype=np.int64) for _ in range(3))
    rows: dict[str, list] = {c: [] for c in ("disp", "fin", "sizes", "reason", "stage")}
    st: dict[str, list] = {c: [] for c in ("b", "kind", "k", "size", "ms")}
    for sb, (run, d, t_end, reason) in enumerate(served):
        done = d + sum(ms for _, ms in run.stages) / 1000.0
        for pos, r in enumerate(run.reqs):
            if run.stage == 0:
                dispatch[r], batch_of[r] = d, sb
            if run.exits[pos] >= 0:
                exits[r], preds[r], finish[r] = run.exits[pos], run.preds[pos], done
        sizes = [0] * k_exits
        for stage, ms in run.stages:
            if stage.kind is StageKind.SEGMENT:
                sizes[stage.k] = stage.batch
            for c, v in zip(st, (sb, stage.kind.code, stage.k, stage.batch, ms), strict=True):
                st[c].append(v)
        for c, v in zip(rows, (d, t_end, sizes, reason, run.stage), strict=True):
            rows[c].append(v)
    return {"arrival": arr, "sample": smp, "dispatch": dispatch, "finish": finish,
            "exit": exits, "pred": preds, "batch": batch_of,
            "batch_dispatch": np.array(rows["disp"]), "batch_finish": np.array(rows["fin"]),
            "batch_sizes": np.array(rows["sizes"], dtype=np.int64).reshape(-1, k_exits),
            "batch_reason": np.array(rows["reason"], dtype=np.int64),
            "batch_stage": np.array(rows["stage"], dtype=np.int64),
            "stage_batch": np.array(st["b"], dtype=np.int64),
            "stage_kind": np.array(st["kind"], dtype=np.int64),
            "stage_k": np.array(st["k"], dtype=np.int64),
            "stage_size": np.array(st["size"], dtype=np.int64), "stage_ms": np.array(st["ms"])}
