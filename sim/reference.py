"""The reference engine: a plain per-request SimPy model of the batched server.

Each request is an object moving through a queue; a batcher process per queue forms batches
as Triton's dynamic batcher does; the executor runs the batch stage by stage with timeouts and
asks the policy at every exit which of the batch's requests leave. Slow, simple, and general:
it runs closed-loop clients, join-shortest-queue routing and stateful policies, and is the
model the fast engine is checked against.
"""

from __future__ import annotations

from bisect import bisect_right
from functools import partial

import numpy as np
import simpy

from offramp.core.execution import Stage, batch_steps
from offramp.core.modes import StageKind

from . import rebatch
from .records import N_KINDS, RunRecords, number_batches
from .scenario import Replication, Scenario
from .workload import ClosedClients

_OVERHEAD = StageKind.OVERHEAD.code


class Request:
    __slots__ = ("rid", "sample", "arrival", "dispatch", "finish", "exit", "replica", "local",
                 "done", "parts", "between")

    def __init__(self, rid: int, sample: int, arrival: float):
        self.rid, self.sample, self.arrival = rid, sample, arrival
        self.dispatch = self.finish = float("nan")
        self.exit = self.replica = self.local = -1
        self.done: simpy.Event | None = None
        # rebatch (sim/rebatch.py): time by stage kind over every batch the request was in,
        # and its time waiting in front of stages after the first.
        self.parts: list[float] | None = None
        self.between = 0.0


class Queue:
    """A FIFO of requests with an event that fires on every arrival."""

    def __init__(self, env: simpy.Environment):
        self.env, self.items, self.arrived = env, [], env.event()

    def put(self, req: Request) -> None:
        self.items.append(req)
        self.poke()

    def poke(self) -> None:
        """Wake whoever waits for an arrival (also when the stream ends)."""
        event, self.arrived = self.arrived, self.env.event()
        event.succeed()


class ReferenceServer:
    """The SimPy model for one replication of a :class:`Scenario`."""

    def __init__(self, scenario: Scenario, rep: Replication):
        self.sc, self.rep = scenario, rep
        self.env = simpy.Environment()
        srv = scenario.server
        self.shared = srv.routing == "shared" or srv.pipeline is not None
        self.queues = [Queue(self.env) for _ in range(1 if self.shared else srv.replicas)]
        self.outstanding, self.batch_count = [0] * srv.replicas, [0] * srv.replicas
        self.requests: list[Request] = []
        self.batches: list[tuple] = []
        self.free_at = [0.0] * srv.replicas  # when each replica finished its last batch
        self.slow = srv.slowdown()
        self.unscaled = [1.0] * len(scenario.service.base)  # stage factors without a loop state
        self.ctrl = rep.controller  # a stateful policy's state for this run, else None
        self.ended = False  # the open-loop stream has no more requests: the rest go at once
        self.rr = 0
        if srv.exit_mode.rebatches:
            rebatch.setup(self)  # stage queues and a process per replica: sim/rebatch.py
        elif self.shared:
            self.free = simpy.PriorityStore(self.env)
            for r in range(srv.replicas):
                self.free.put(simpy.PriorityItem((0.0, r), r))
            self.env.process(self._dispatcher())
        else:
            for r in range(srv.replicas):
                self.env.process(self._batcher(r))

    # Arrivals and routing.
    def _route(self) -> int:
        srv = self.sc.server
        if self.shared:
            return 0
        if srv.routing == "round_robin":
            r, self.rr = self.rr, (self.rr + 1) % srv.replicas
            return r
        if srv.routing == "random":
            return int(self.rep.route_rng.integers(0, srv.replicas))
        return min(range(srv.replicas), key=lambda q: (self.outstanding[q], q))

    def _submit(self, sample: int, arrival: float, route: int | None = None) -> Request:
        req = Request(len(self.requests), sample, arrival)
        req.done = self.env.event()
        self.requests.append(req)
        q = route if route is not None else self._route()
        if not self.shared:
            self.outstanding[q] += 1
            req.replica = q
        self.queues[q].put(req)
        return req

    def _open_loop(self):
        load, routes = self.rep.requests, self.rep.routes
        routes = routes.tolist() if routes is not None else [None] * load.times.size
        prev, last = 0.0, load.times.size - 1
        for i, (a, s, r) in enumerate(zip(load.times.tolist(), load.samples.tolist(), routes,
                                          strict=True)):
            # Requests arriving at the same instant are all queued before any batcher looks
            # (as the fast engine and a real batcher see them).
            if a > prev:
                yield self.env.timeout(a - prev)
            prev = a
            self.ended = i == last
            self._submit(s, a, r)
        for q in self.queues:
            q.poke()

    def _client(self, c: ClosedClients):
        mean_think = c.think_ms / 1000.0
        while True:
            if mean_think > 0:
                yield self.env.timeout(c.think_rng.exponential(mean_think))
            if c.max_requests is not None and len(self.requests) >= c.max_requests:
                return
            if c.duration_s is not None and self.env.now >= c.duration_s:
                return
            sample = int(c.sample_rng.choice(c.test_ids))
            req = self._submit(sample, self.env.now)
            yield req.done

    # Batching.
    def _form_batch(self, queue: Queue):
        """Wait until a batch is due (max_batch waiting, or the oldest waited max_wait)."""
        srv = self.sc.server
        wait = srv.max_wait_ms / 1000.0
        while not queue.items:
            yield queue.arrived
        deadline = queue.items[0].arrival + wait
        while len(queue.items) < srv.max_batch and self.env.now < deadline and not self.ended:
            yield queue.arrived | self.env.timeout(deadline - self.env.now)
        batch = queue.items[: srv.max_batch]
        del queue.items[: srv.max_batch]
        return batch

    def _batcher(self, r: int):
        while True:
            batch = yield from self._form_batch(self.queues[r])
            yield from self._execute(batch, r)

    def _dispatcher(self):
        while True:
            item = yield self.free.get()
            batch = yield from self._form_batch(self.queues[0])
            self.env.process(self._run_and_release(batch, item.item))

    def _run_and_release(self, batch: list[Request], r: int):
        yield from self._execute(batch, r)
        self.free.put(simpy.PriorityItem((self.env.now, r), r))

    # Execution.
    def _execute(self, batch: list[Request], r: int):
        sc, env, ctrl = self.sc, self.env, self.ctrl
        svc, mode = sc.service, sc.server.exit_mode
        k_exits = svc.n_exits
        m = self.batch_count[r]
        self.batch_count[r] += 1
        z = self.rep.noise[r].row(m)
        size = len(batch)
        start = env.now
        for req in batch:
            req.dispatch, req.replica, req.local = start, r, m
        at, factors = self.slow[r]
        x = factors[bisect_right(at, start) - 1]

        # Time by stage kind so far (the breakdown); a stall and the wake-up are overhead.
        acc = [0.0] * N_KINDS
        parts = [0.0] * (k_exits * N_KINDS)
        acc[_OVERHEAD] = yield from self._start(r, size, start)
        # Loop-state factors where measured, else every stage x 1.0 (exact).
        fac = self.unscaled if svc.state is None else svc.state.at_dispatch(start - self.free_at[r])
        sizes = [0] * k_exits
        active = batch
        steps = batch_steps(mode, size, sc.policy.active_exits(k_exits).tolist())
        decider = sc.policy.decide if ctrl is None else partial(ctrl.decide, replica=r)
        item = next(steps)
        while item is not None:
            if isinstance(item, Stage):
                if item.kind not in svc.skip:
                    slot = svc.slot(item.kind, item.k)
                    dt = svc.duration(slot, item.batch, z) * x * fac[slot]
                    acc[item.kind.code] += dt
                    yield env.timeout(dt)
                if item.kind is StageKind.SEGMENT:
                    sizes[item.k] = item.batch
                item = next(steps, None)
                continue
            k = item.k
            if not mode.consults_early_exits:
                leave = [True] * len(active)
            else:
                leave = decider(sc.trace, k, np.array([q.sample for q in active]))
            self._finish([q for q, go in zip(active, leave, strict=True) if go], k)
            parts[k * N_KINDS:(k + 1) * N_KINDS] = acc
            active = [q for q, go in zip(active, leave, strict=True) if not go]
            try:
                item = steps.send(len(active))
            except StopIteration:
                item = None
        if svc.tail is not None and svc.tail[size] > 0:  # busy after the last stage
            yield env.timeout(svc.tail[size])
        self.batches.append((r, m, start, env.now, sizes, parts))
        self.free_at[r] = env.now

    def _start(self, r: int, size: int, start: float):
        """A stateful policy's switching stall, then the loop's wake-up after an idle spell
        (where the profile measured one); returns their time."""
        spent = 0.0
        if self.ctrl is not None:
            stall = self.ctrl.begin_batch(start, r)
            if stall > 0:
                spent += stall
                yield self.env.timeout(stall)
        if self.sc.service.wake is not None:
            wake = self.sc.service.wake_s(size, start - self.free_at[r])
            if wake > 0:
                spent += wake
                yield self.env.timeout(wake)
        return spent

    def _finish(self, reqs: list[Request], k: int) -> None:
        now = self.env.now
        for req in reqs:
            req.finish, req.exit = now, k
            if not self.shared:
                self.outstanding[req.replica] -= 1
            if self.ctrl is not None:
                self.ctrl.observe(now, now - req.arrival, req.replica, k)
            req.done.succeed()

    def run(self) -> RunRecords:
        load = self.rep.requests
        if isinstance(load, ClosedClients):
            for _ in range(load.clients):
                self.env.process(self._client(load))
        else:
            self.env.process(self._open_loop())
        self.env.run()
        return _records(self.requests, self.batches, self.sc.trace.n_exits)


def _records(reqs: list[Request], b: list[tuple], k_exits: int) -> RunRecords:
    """The run's flat records from its request objects and its batches' (replica, local
    count, dispatch, finish, sizes, time by kind at each exit)."""
    replica = np.array([q.replica for q in reqs], dtype=np.int64)
    local = np.array([q.local for q in reqs], dtype=np.int64)
    b_rep = np.array([x[0] for x in b], dtype=np.int64)
    b_loc = np.array([x[1] for x in b], dtype=np.int64)
    b_disp = np.array([x[2] for x in b])
    order, gid = number_batches(replica, local, b_rep, b_loc, b_disp)
    exits = np.array([q.exit for q in reqs], dtype=np.int64)
    if reqs and reqs[0].parts is not None:  # rebatch: each request's own sum over its batches
        parts = np.array([q.parts for q in reqs], dtype=float)
        extra = {"between_s": np.array([q.between for q in reqs])}
    else:
        parts = np.array([x[5] for x in b], dtype=float).reshape(-1, k_exits, N_KINDS)[
            order][gid, exits]
        extra = {}
    return RunRecords(
        arrival=np.array([q.arrival for q in reqs]),
        sample=np.array([q.sample for q in reqs], dtype=np.int64),
        dispatch=np.array([q.dispatch for q in reqs]),
        finish=np.array([q.finish for q in reqs]),
        exit=exits, replica=replica, batch=gid, batch_replica=b_rep[order],
        batch_dispatch=b_disp[order], batch_finish=np.array([x[3] for x in b])[order],
        batch_sizes=np.array([x[4] for x in b], dtype=np.int64).reshape(-1, k_exits)[order],
        parts=parts, extra=extra,
    )


def run_reference(scenario: Scenario, rep: Replication) -> RunRecords:
    """Simulate any replication request by request."""
    return ReferenceServer(scenario, rep).run()
