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
from .lookup_lane import LookupLane
from .records import N_KINDS, RunRecords, from_requests
from .reference_requests import Arrivals, Queue, Request
from .scenario import Replication, Scenario
from .workload import ClosedClients

_OVERHEAD, _CHECK = StageKind.OVERHEAD.code, StageKind.CHECK.code


class ReferenceServer(Arrivals):
    """The SimPy model for one replication of a :class:`Scenario` (its arrivals and routing:
    :class:`~offramp.sim.reference_requests.Arrivals`)."""

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
        lane = LookupLane(env)  # async: the lookups beside the backbone (core.execution)
        item = next(steps)
        while item is not None:
            if isinstance(item, Stage):
                if item.wait:
                    acc[_CHECK] += yield from lane.wait()
                if item.kind not in svc.skip:
                    slot = svc.slot(item.kind, item.k)
                    dt = svc.duration(slot, item.batch, z) * x * fac[slot]
                    if item.aside:
                        lane.add(item, dt, acc)
                    else:
                        acc[item.kind.code] += dt
                        yield env.timeout(dt)
                if item.kind is StageKind.SEGMENT:
                    sizes[item.k] = item.batch
                item = next(steps, None)
                continue
            k = item.k
            leave = ([True] * len(active) if not mode.consults_early_exits
                     else decider(sc.trace, k, np.array([q.sample for q in active])))
            leavers = [q for q, go in zip(active, leave, strict=True) if go]
            lane.leave(partial(self._leave, leavers, k, parts), acc)  # now, or after a lookup
            active = [q for q, go in zip(active, leave, strict=True) if not go]
            try:
                item = steps.send(len(active))
            except StopIteration:
                item = None
        yield from lane.wait()
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

    def _leave(self, reqs: list[Request], k: int, parts: list[float], acc: list[float]) -> None:
        """``reqs`` leave at exit k now, their time by stage kind ``acc``."""
        self._finish(reqs, k)
        parts[k * N_KINDS:(k + 1) * N_KINDS] = acc

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
        return from_requests(self.requests, self.batches, self.sc.trace.n_exits)


def run_reference(scenario: Scenario, rep: Replication) -> RunRecords:
    """Simulate any replication request by request."""
    return ReferenceServer(scenario, rep).run()
