"""The reference engine's requests and queues, and how requests arrive and are routed
(open-loop streams, closed-loop clients): :class:`Arrivals`, a part of
:class:`offramp.sim.reference.ReferenceServer`."""

from __future__ import annotations

import simpy

from .workload import ClosedClients


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


class Arrivals:
    """Arrivals and routing of :class:`~offramp.sim.reference.ReferenceServer` (which holds the
    state they use: ``sc``, ``rep``, ``env``, ``queues``, ``requests``, ``outstanding``)."""

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
