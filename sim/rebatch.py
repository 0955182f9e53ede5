"""``exit_mode: rebatch`` in the reference engine: survivors batched again across batches.

A replica's work is cut into stages at the exits the policy consults (stage j ends with exit
``e_j``'s head and decision). Requests enter stage 0 through the replica's dynamic batcher;
after exit ``e_j`` the leavers finish and the survivors wait in front of stage j+1, where
survivors of other batches join them. Whenever the replica is free it runs one ready stage:

- stage 0 is ready by the batching rule (``max_batch`` waiting, the oldest waited
  ``max_wait_ms``, or the stream has ended);
- stage j ≥ 1 is ready when ``max_batch`` survivors wait, when the first of them has waited
  ``stage_max_wait_ms``, or when nothing upstream (no request, no survivor of an earlier
  stage) could join them;
- among the ready stages the ``discipline`` picks: ``deepest_first``; ``oldest_first``, the
  stage whose first sample has waited longest in front of it (since its arrival at stage 0,
  since its last exit at the others); ``fullest_first``, the most samples up to
  ``max_batch``; ties go deeper. Nothing ready, the replica waits for an arrival or the next
  deadline.

A stage batch takes the first ``max_batch`` waiting (FIFO) and runs the execution rule's
stages up to its exit (:func:`offramp.core.execution.reach_exit`), after stage 0's dispatch
overhead, or, at stage j ≥ 1, after the gather of its survivors (``compact`` at exit
``e_{j-1}`` and the new batch size; ``handoff`` instead where the batch is exactly one earlier
batch's survivors and nobody left it). So a batch alone in the system runs as in ``shrink``.
The wake-up after an idle spell, the loop-state factors and the tail apply to every stage
batch (each is one pass of the serving loop). Each stage batch is one row of the records' batch
arrays (its segments' sizes, its own noise row); a request's ``batch`` is its stage-0 batch,
its ``parts`` the stage work of every batch it was in, and ``extra["between_s"]`` its time
waiting in front of stages after the first (parts plus that add up to finish − dispatch).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import numpy as np

from offramp.core.execution import Stage, consulted, reach_exit
from offramp.core.modes import Discipline, ExitMode, StageKind

from .records import N_KINDS

OVERHEAD, SEGMENT, COMPACT, HANDOFF = (StageKind.OVERHEAD, StageKind.SEGMENT,
                                       StageKind.COMPACT, StageKind.HANDOFF)


class _Waiting:
    """Survivors waiting in front of one stage: (request, since, source batch) in FIFO order."""

    def __init__(self):
        self.items: list[tuple[Any, float, int]] = []


def _ready(srv: Any, r: int, waiting: list[_Waiting]) -> list[tuple[int, float, int]]:
    """The stages replica ``r`` may run now: (stage, since when its first sample waits in
    front of it, how many it would take)."""
    cfg, now, entry = srv.sc.server, srv.env.now, srv.queues[r].items
    out, upstream = [], bool(entry)
    if entry and (len(entry) >= cfg.max_batch or now >= entry[0].arrival + cfg.max_wait_ms / 1000.0
                  or srv.ended):
        out.append((0, entry[0].arrival, min(len(entry), cfg.max_batch)))
    for j in range(1, len(waiting)):
        items = waiting[j].items
        if items and (len(items) >= cfg.max_batch or now >= items[0][1] + cfg.stage_wait_s
                      or not upstream):
            out.append((j, items[0][1], min(len(items), cfg.max_batch)))
        upstream = upstream or bool(items)
    return out


def _pick(ready: list[tuple[int, float, int]], discipline: Discipline) -> int:
    """The stage the discipline runs among the ready ones (ties: the deeper)."""
    if discipline is Discipline.OLDEST_FIRST:
        return min(ready, key=lambda x: (x[1], -x[0]))[0]
    if discipline is Discipline.FULLEST_FIRST:
        return max(ready, key=lambda x: (x[2], x[0]))[0]
    return max(x[0] for x in ready)


def _next_deadline(srv: Any, r: int, waiting: list[_Waiting]) -> float:
    """When the first waiting stage becomes ready by its wait alone (inf: none waits)."""
    cfg, entry = srv.sc.server, srv.queues[r].items
    times = [entry[0].arrival + cfg.max_wait_ms / 1000.0] if entry else []
    times += [w.items[0][1] + cfg.stage_wait_s for w in waiting[1:] if w.items]
    return min(times, default=float("inf"))


def rebatch_executor(srv: Any, r: int):
    """Replica ``r``'s process in ``rebatch`` mode (see the module docstring)."""
    sc, env = srv.sc, srv.env
    n_exits = sc.trace.n_exits
    exits = consulted(ExitMode.REBATCH, sc.policy.active_exits(n_exits).tolist())
    waiting = [_Waiting() for _ in exits]
    groups: dict[int, int] = {}  # stage batch -> survivors it sent on intact (-1: some left)
    while True:
        ready = _ready(srv, r, waiting)
        if not ready:
            wait = _next_deadline(srv, r, waiting) - env.now
            arrived = srv.queues[r].arrived
            yield arrived | env.timeout(wait) if wait < float("inf") else arrived
            continue
        j = _pick(ready, sc.server.discipline)
        if j == 0:
            queue = srv.queues[r].items
            batch, since, src = queue[:sc.server.max_batch], None, None
            del queue[:sc.server.max_batch]
        else:
            taken = waiting[j].items[:sc.server.max_batch]
            del waiting[j].items[:sc.server.max_batch]
            batch = [q for q, _, _ in taken]
            since, src = [t for _, t, _ in taken], {g for _, _, g in taken}
        intact = src is not None and len(src) == 1 and groups.get(next(iter(src))) == len(batch)
        yield from _run_stage(srv, r, j, exits, batch, since, intact, waiting, groups)



def _steps(j: int, exits: list[int], b: int, intact: bool, n_exits: int) -> list[Stage]:
    """Stage j's work on a batch of b: the dispatch overhead (stage 0) or the gather of its
    survivors (``handoff`` where it is one earlier batch intact), then up to exit ``e_j``."""
    lo = exits[j - 1] + 1 if j else 0
    first = (Stage(OVERHEAD, 0, b) if j == 0
             else Stage(HANDOFF if intact else COMPACT, exits[j - 1], b))
    return [first, *reach_exit(ExitMode.REBATCH, b, b, lo, exits[j], n_exits)]


def _run_stage(srv: Any, r: int, j: int, exits: list[int], batch: list, since: list | None,
               intact: bool, waiting: list[_Waiting], groups: dict[int, int]):
    """Run stage j on ``batch`` on replica ``r``; the leavers at its exit finish, the rest
    wait in front of stage j+1."""
    sc, env = srv.sc, srv.env
    svc, n_exits = sc.service, sc.trace.n_exits
    m = srv.batch_count[r]
    srv.batch_count[r] += 1
    z, start, b = srv.rep.noise[r].row(m), env.now, len(batch)
    acc = [0.0] * N_KINDS
    if j == 0:
        for req in batch:
            req.dispatch, req.replica, req.local = start, r, m
            req.parts, req.between = [0.0] * N_KINDS, 0.0
        acc[OVERHEAD.code] = yield from srv._start(r, b, start)
    else:
        for req, t in zip(batch, since, strict=True):
            req.between += start - t
        if svc.wake is not None and (w := svc.wake_s(b, start - srv.free_at[r])) > 0:
            acc[OVERHEAD.code] = w
            yield env.timeout(w)
    at, factors = srv.slow[r]
    x = factors[bisect_right(at, start) - 1]
    fac = srv.unscaled if svc.state is None else svc.state.at_dispatch(start - srv.free_at[r])
    sizes = [0] * n_exits
    for st in _steps(j, exits, b, intact, n_exits):
        if st.kind not in svc.skip:
            slot = svc.slot(st.kind, st.k)
            dt = svc.duration(slot, st.batch, z) * x * fac[slot]
            acc[st.kind.code] += dt
            yield env.timeout(dt)
        if st.kind is SEGMENT:
            sizes[st.k] = st.batch
    k = exits[j]
    for req in batch:
        req.parts = [a + c for a, c in zip(req.parts, acc, strict=True)]
    if k < n_exits - 1 and sc.server.exit_mode.consults_early_exits:
        samples = np.array([q.sample for q in batch])
        leave = (sc.policy.decide(sc.trace, k, samples) if srv.ctrl is None
                 else srv.ctrl.decide(sc.trace, k, samples, replica=r))
    else:
        leave = [True] * b
    srv._finish([q for q, go in zip(batch, leave, strict=True) if go], k)
    going = [q for q, go in zip(batch, leave, strict=True) if not go]
    groups[m] = len(going) if len(going) == b else -1
    waiting[min(j + 1, len(waiting) - 1)].items.extend((q, env.now, m) for q in going)
    if svc.tail is not None and svc.tail[b] > 0:
        yield env.timeout(svc.tail[b])
    srv.batches.append((r, m, start, env.now, sizes, [0.0] * (n_exits * N_KINDS)))
    srv.free_at[r] = env.now
