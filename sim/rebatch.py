"""``exit_mode: rebatch`` in the reference engine: survivors batched again across batches, on
one replica or on a pipeline of GPUs (E3).

A replica's work is cut into **stages**: stage j runs the segments up to ``ends[j]``, an exit
the policy consults (its head and decision then end the stage) or the last segment of a
pipeline group. Requests enter stage 0 through the dynamic batcher; after a stage the leavers
finish and the survivors wait in front of the next stage, where survivors of other batches
join them. A **pool** (one replica, or one pipeline group's replicas) serves its stages; a
free replica of a pool runs one ready stage of its pool:

- stage 0 is ready by the batching rule (``max_batch`` waiting, the oldest waited
  ``max_wait_ms``, or the stream has ended);
- stage j ≥ 1 is ready when ``max_batch`` survivors wait, when the first of them has waited
  ``stage_max_wait_ms``, or when nothing upstream (no request or survivor waiting at, running
  in or moving to an earlier stage that feeds it) could join them;
- among the ready stages the ``discipline`` picks: ``deepest_first``; ``oldest_first``, the
  stage whose first sample has waited longest in front of it (since its arrival at stage 0,
  since it was queued there at the others); ``fullest_first``, the most samples up to
  ``max_batch``; ties go deeper. Nothing ready, the replica waits for an arrival, a survivor,
  a change upstream or the next deadline.

A stage batch takes its queue's first ``max_batch`` (FIFO) and runs the execution rule's
stages (:func:`offramp.core.execution.between_exits`, :func:`reach_exit`), after stage 0's
dispatch overhead or, at stage j ≥ 1, after the gather of its survivors (``compact`` at
``ends[j-1]`` and the new size; ``handoff`` instead where the batch is exactly one earlier
batch's survivors and nobody left it). So a batch alone in the system runs as in ``shrink``.
Survivors leaving a pipeline group reach the next after ``transfer_ms_per_sample`` × their
number. The wake-up after an idle spell, the loop-state factors and the tail apply to every
stage batch (each is one pass of the serving loop). Each stage batch is one row of the records'
batch arrays (its segments' sizes, its own noise row); a request's ``batch`` is its stage-0
batch, its ``parts`` the stage work of every batch it was in, and ``extra["between_s"]`` its
time between stages (waiting and moving; parts plus that add up to finish − dispatch).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import numpy as np

from offramp.common.errors import InputError
from offramp.core.modes import StageKind
from offramp.core.rebatching import Layout, cut, pick, stage_ready, stage_steps

from .records import N_KINDS

OVERHEAD, SEGMENT = StageKind.OVERHEAD, StageKind.SEGMENT
INF = float("inf")


def layout(sc: Any) -> Layout:
    """The stages of a scenario: cut at the exits its policy consults and at its pipeline's
    group boundaries."""
    n = sc.trace.n_exits
    groups = None if sc.server.pipeline is None else [g.segments for g in sc.server.pipeline]
    if groups is not None and groups[-1][-1] != n - 1:
        raise InputError("server", "pipeline", f"its groups cover segments 0-{groups[-1][-1]} "
                         f"but the model has {n}", f"place segments 0-{n - 1}, each once")
    return cut(sc.policy.active_exits(n).tolist(), groups)


class Pool:
    """The stages one pool serves (a replica, or a pipeline group's replicas), what waits in
    front of each ((request, since, source batch, when it left its last stage), FIFO), and
    an event its replicas wait on for survivors and changes upstream."""

    def __init__(self, srv: Any, stages: list[int], entry: Any, feeders: list[Pool]):
        self.srv, self.stages, self.entry = srv, stages, entry
        self.waiting: dict[int, list[tuple[Any, float, tuple, float]]] = {j: [] for j in stages}
        self.feeders = [*feeders, self]  # pools whose stages can send samples here
        tracked = [0, *stages] if entry is not None else stages
        self.running: dict[int, int] = dict.fromkeys(tracked, 0)  # stage -> batches running
        self.incoming: dict[int, int] = dict.fromkeys(tracked, 0)  # stage -> samples moving in
        self.wake = srv.env.event()

    def poke(self) -> None:
        event, self.wake = self.wake, self.srv.env.event()
        event.succeed()

    def upstream(self, j: int) -> bool:
        """Whether anything could still join stage j: a request at the entry, or a sample
        waiting at, running in or moving to an earlier stage that feeds it (or moving to j)."""
        if self.incoming[j] or any(p.entry is not None and p.entry.items for p in self.feeders):
            return True
        return any(i < j and (p.waiting.get(i) or p.running[i] or p.incoming[i])
                   for p in self.feeders for i in p.running)

    def ready(self) -> list[tuple[int, float, int]]:
        """The stages that may run now: (stage, since when its first sample waits, how many)."""
        cfg, now, out = self.srv.sc.server, self.srv.env.now, []
        entry = self.entry.items if self.entry is not None else []
        if entry and (len(entry) >= cfg.max_batch or self.srv.ended
                      or now >= entry[0].arrival + cfg.max_wait_ms / 1000.0):
            out.append((0, entry[0].arrival, min(len(entry), cfg.max_batch)))
        for j, items in self.waiting.items():
            if items and stage_ready(len(items), items[0][1], now, cfg.max_batch,
                                     cfg.stage_wait_s, self.upstream(j)):
                out.append((j, items[0][1], min(len(items), cfg.max_batch)))
        return out

    def deadline(self) -> float:
        """When the first waiting stage becomes ready by its wait alone (inf: none waits)."""
        cfg = self.srv.sc.server
        times = [w[0][1] + cfg.stage_wait_s for w in self.waiting.values() if w]
        if self.entry is not None and self.entry.items:
            times.append(self.entry.items[0].arrival + cfg.max_wait_ms / 1000.0)
        return min(times, default=INF)


def setup(srv: Any) -> None:
    """Give a reference server its stages (``rb_plan``), the pool of each replica
    (``rb_pools``: its own, or its pipeline group's), each group's pool (``rb_groups``), the
    survivors each stage batch sent on intact (``rb_intact``), and start each replica's
    process."""
    plan, cfg = layout(srv.sc), srv.sc.server
    srv.rb_plan, srv.rb_intact, srv.rb_groups = plan, {}, None
    if cfg.pipeline is None:
        srv.rb_pools = [Pool(srv, list(range(1, len(plan.ends))), q, [])
                        for q in (srv.queues if len(srv.queues) > 1 else srv.queues * cfg.replicas)]
    else:
        made: list[Pool] = []
        for g in range(len(cfg.pipeline)):
            stages = [j for j in range(1, len(plan.ends)) if plan.group[j] == g]
            made.append(Pool(srv, stages, srv.queues[0] if g == 0 else None, list(made)))
        srv.rb_pools = [made[g] for g, grp in enumerate(cfg.pipeline) for _ in range(grp.replicas)]
        srv.rb_groups = made
    if len(srv.rb_pools) != cfg.replicas:
        raise ValueError(f"server.replicas is {cfg.replicas} but the pipeline's groups have "
                         f"{len(srv.rb_pools)} replicas")
    for r in range(cfg.replicas):
        srv.env.process(rebatch_executor(srv, r))


def _poke(srv: Any) -> None:
    """Wake a pipeline's waiting replicas: what is upstream of them may have changed."""
    for pool in srv.rb_groups or ():
        pool.poke()


def rebatch_executor(srv: Any, r: int):
    """Replica ``r``'s process in ``rebatch`` mode (see the module docstring)."""
    env, cfg, pool = srv.env, srv.sc.server, srv.rb_pools[r]
    while True:
        ready = pool.ready()
        if not ready:
            wait = pool.deadline() - env.now
            event = pool.wake if pool.entry is None else pool.wake | pool.entry.arrived
            yield event | env.timeout(wait) if wait < INF else event
            continue
        j = pick(ready, cfg.discipline)
        if j == 0:
            batch, taken = pool.entry.items[:cfg.max_batch], None
            del pool.entry.items[:cfg.max_batch]
        else:
            taken = pool.waiting[j][:cfg.max_batch]
            del pool.waiting[j][:cfg.max_batch]
            batch = [q for q, _, _, _ in taken]
        pool.running[j] += 1
        yield from _run_stage(srv, r, j, batch, taken)
        pool.running[j] -= 1
        _poke(srv)


def _begin(srv: Any, r: int, j: int, m: int, batch: list, taken: list | None, start: float):
    """What a stage batch does before its stages: stage 0 dispatches its requests, a later
    stage counts its samples' time between stages; then the controller's stall and the
    wake-up. Returns their time (overhead)."""
    if j == 0:
        for req in batch:
            req.dispatch, req.replica, req.local = start, r, m
            req.parts, req.between = [0.0] * N_KINDS, 0.0
    else:
        for req, _since, _src, left in taken:
            req.between += start - left
    # Every stage batch is a batch of its replica: a stateful policy's switch (and its stall)
    # and the wake-up after an idle spell apply to each, whichever stage it runs.
    return (yield from srv._start(r, len(batch), start))


def _decide(srv: Any, r: int, j: int, batch: list) -> list[bool]:
    """Who leaves at the end of stage j: the policy's decision at a consulted early exit,
    everybody at the last, nobody at a pipeline boundary without an exit."""
    sc, plan = srv.sc, srv.rb_plan
    if plan.ends[j] == sc.trace.n_exits - 1 or not plan.exits[j]:
        return [plan.ends[j] == sc.trace.n_exits - 1] * len(batch)
    k = plan.ends[j]
    samples = np.array([q.sample for q in batch])
    return (sc.policy.decide(sc.trace, k, samples) if srv.ctrl is None
            else srv.ctrl.decide(sc.trace, k, samples, replica=r))


def _run_stage(srv: Any, r: int, j: int, batch: list, taken: list | None):
    """Run stage j on ``batch`` on replica ``r``; the leavers at its end finish, the rest go
    on to stage j+1 (after the move to the next pipeline group, where it is another)."""
    sc, env, plan = srv.sc, srv.env, srv.rb_plan
    svc, n_exits, b = sc.service, sc.trace.n_exits, len(batch)
    srcs = {src for _, _, src, _ in taken} if taken else set()
    intact = len(srcs) == 1 and srv.rb_intact.get(next(iter(srcs))) == b
    m = srv.batch_count[r]
    srv.batch_count[r] += 1
    z, start = srv.rep.noise[r].row(m), env.now
    acc = [0.0] * N_KINDS
    acc[OVERHEAD.code] = yield from _begin(srv, r, j, m, batch, taken, start)
    at, factors = srv.slow[r]
    x = factors[bisect_right(at, start) - 1]
    fac = srv.unscaled if svc.state is None else svc.state.at_dispatch(start - srv.free_at[r])
    sizes = [0] * n_exits
    for st in stage_steps(plan, j, b, intact, n_exits):
        if st.kind not in svc.skip:
            slot = svc.slot(st.kind, st.k)
            dt = svc.duration(slot, st.batch, z) * x * fac[slot]
            acc[st.kind.code] += dt
            yield env.timeout(dt)
        if st.kind is SEGMENT:
            sizes[st.k] = st.batch
    for req in batch:
        req.parts = [a + c for a, c in zip(req.parts, acc, strict=True)]
    leave = _decide(srv, r, j, batch)
    srv._finish([q for q, go in zip(batch, leave, strict=True) if go], plan.ends[j])
    going = [q for q, go in zip(batch, leave, strict=True) if not go]
    srv.rb_intact[(r, m)] = b if len(going) == b else -1
    if going:
        _send_on(srv, r, j, going, (r, m))
    if svc.tail is not None and svc.tail[b] > 0:
        yield env.timeout(svc.tail[b])
    srv.batches.append((r, m, start, env.now, sizes, [0.0] * (n_exits * N_KINDS)))
    srv.free_at[r] = env.now


def _send_on(srv: Any, r: int, j: int, going: list, src: tuple) -> None:
    """Survivors of stage j into the queue of stage j+1: at once in the same pool, after the
    move (``transfer_ms_per_sample`` each) into the next pipeline group's."""
    plan, now = srv.rb_plan, srv.env.now
    same = plan.group[j + 1] == plan.group[j]
    dest = srv.rb_pools[r] if same else srv.rb_groups[plan.group[j + 1]]
    move = 0.0 if same else srv.sc.server.transfer_ms_per_sample * len(going) / 1000.0
    if move <= 0:
        dest.waiting[j + 1].extend((q, now, src, now) for q in going)
        _poke(srv)  # another group's idle GPUs may take them now (this one has its tail left)
        return
    dest.incoming[j + 1] += len(going)

    def arrive():
        yield srv.env.timeout(move)
        dest.incoming[j + 1] -= len(going)
        dest.waiting[j + 1].extend((q, srv.env.now, src, now) for q in going)
        _poke(srv)

    srv.env.process(arrive())
