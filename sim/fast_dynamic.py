"""The fast engine for join-shortest-queue routing and closed-loop clients: prepares the
arrays of :mod:`.fast_events`' compiled event loop, answers what it asks for, and returns the
run's records (the same as :func:`offramp.sim.reference.run_reference` gives).

A closed loop's random draws are taken from the same generators, in the same order, as the
reference's clients take them one at a time (the i-th think time, the j-th request's sample
and route): drawn here in blocks, which numpy's generators make the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from offramp.core.modes import StageKind

from . import fast_events as ev
from .fast import _exits
from .fast_heap import push
from .fast_manager import level_exits, manager_arrays
from .fast_numba import _Plans, _tables
from .fast_steps import compile_plan
from .records import N_KINDS, RunRecords, number_batches
from .scenario import Replication, Scenario
from .service import ROWS_PER_CHUNK
from .workload import ClosedClients


class _Draws:
    """A closed loop's per-request draws (sample, exit, route) and think times, extended in
    blocks from the replication's generators as the loop asks for room."""

    def __init__(self, scenario: Scenario, rep: Replication, load: ClosedClients):
        self.sc, self.rep, self.load = scenario, rep, load
        self.samples = np.zeros(0, np.int64)
        self.exits = np.zeros(0, np.int64)
        self.routes = np.zeros(0, np.int64)
        self.thinks = np.zeros(0)

    def extend(self, cap: int) -> None:
        """Draws for ``cap`` requests (and think times for ``cap`` + clients)."""
        load, srv = self.load, self.sc.server
        more = cap - self.samples.size
        new = load.sample_rng.choice(load.test_ids, more)
        self.samples = np.concatenate([self.samples, new])
        self.exits = np.concatenate([self.exits, _exits(self.sc, new)])
        if srv.routing == "random" and srv.replicas > 1:
            self.routes = np.concatenate([self.routes,
                                          self.rep.route_rng.integers(0, srv.replicas, more)])
        if load.think_ms > 0:
            self.thinks = np.concatenate([self.thinks, load.think_rng.exponential(
                load.think_ms / 1000.0, cap + load.clients - self.thinks.size)])


def _grow(arrays: list[np.ndarray], cap: int, fill: list[Any]) -> list[np.ndarray]:
    """Each array with its first axis grown to ``cap`` rows (new rows ``fill``; kept rows
    copied)."""
    out = []
    for a, f in zip(arrays, fill, strict=True):
        b = np.full((cap, *a.shape[1:]), f, dtype=a.dtype)
        b[:a.shape[0]] = a
        out.append(b)
    return out


def _routing(server: Any) -> tuple[int, np.ndarray]:
    """(routing code, the queue each replica serves)."""
    if server.routing == "shared" or server.replicas == 1:
        return ev.SHARED, np.zeros(server.replicas, np.int64)
    code = {"round_robin": ev.ROUND_ROBIN, "random": ev.RANDOM, "jsq": ev.JSQ}[server.routing]
    return code, np.arange(server.replicas, dtype=np.int64)


class _EventRun:
    """One replication's arrays for the event loop, what it asks for, and its records."""

    def __init__(self, scenario: Scenario, rep: Replication, breakdown: bool):
        svc, srv, k = scenario.service, scenario.server, scenario.trace.n_exits
        self.sc, self.rep, self.breakdown, self.k = scenario, rep, breakdown, k
        self.ctrl = rep.controller  # a manager's run state (Dynamic-OFA), else None
        self.lv_ex = level_exits(scenario) if self.ctrl is not None else None
        self.own = np.asarray(getattr(rep.requests, "samples", ()), np.int64)  # open loop
        load, reps = rep.requests, srv.replicas
        self.routing, queue_of = _routing(srv)
        n_q = int(queue_of.max()) + 1
        self.closed = isinstance(load, ClosedClients)
        self.draws = _Draws(scenario, rep, load) if self.closed else None
        if self.closed:
            cap = max(load.max_requests if load.max_requests is not None else 4096, 1)
            self.draws.extend(cap)
            arr_t, ex, self.n_open, self.end = np.zeros(cap), self.draws.exits.copy(), -1, np.inf
        else:
            arr_t, ex = load.times.astype(float), _exits(scenario, load.samples)
            cap = self.n_open = arr_t.size
            self.end = float(arr_t[-1]) if cap else 0.0
        self.cap = cap = max(cap, 1)
        arr_t, ex = (np.zeros(1), np.zeros(1, np.int64)) if not arr_t.size else (arr_t, ex)
        self.reqs = [arr_t, ex] + _grow([np.zeros(0, np.int64)] * 2 + [np.zeros(0)] * 2
                                        + [np.zeros(0, np.int64)] * 2, cap, [-1, -1, 0, 0, 0, 0])
        self.reqs.append(np.zeros((cap if breakdown else 1, N_KINDS)))
        self.out = _grow([np.zeros(0, np.int64)] * 3 + [np.zeros(0)] * 2
                         + [np.zeros((0, k), np.int64)], cap, [0] * 6) + [np.zeros(cap + 1,
                                                                                  np.int64)]
        self.queues = (np.zeros(n_q, np.int64), np.zeros(n_q, np.int64),
                       np.zeros(n_q, np.int64), queue_of, np.zeros(reps, np.int64),
                       np.zeros(reps), np.zeros(reps, np.int64))
        tables = _tables(svc, srv, reps)
        self.fixed = svc.dist == "fixed"
        self.noise = np.zeros((reps, svc.width if self.fixed else ROWS_PER_CHUNK * svc.width))
        self.chunk_of = np.full(reps, -1, np.int64)
        self.svc = (np.array(svc.base), np.array(svc.sigma), self.noise, self.chunk_of,
                    *(tables[name] for name in ("slow_at", "slow_x", "wake", "grid", "edges",
                                                "state_f", "tail")))
        self.active = tuple(bool(a) for a in scenario.policy.active_exits(k))
        memo = svc.__dict__.setdefault("_compiled_plans", {})
        self.plans = memo.setdefault((srv.exit_mode, self.active, srv.max_batch), _Plans(k))
        self.fin = (np.zeros(reps * k + 1), np.zeros((reps * k + 1, 3), np.int64))
        clients = load.clients if self.closed else 0
        self.cli = (np.zeros(max(clients, 1)), np.zeros((max(clients, 1), 3), np.int64))
        self.cur, self.aux = np.zeros(ev.NOW + 1, np.int64), np.zeros(k + 1, np.int64)
        self.think_on = self.closed and load.think_ms > 0
        self.scratch = (np.zeros(srv.max_batch), np.zeros(k), np.zeros((k, N_KINDS)),
                        np.zeros((2, N_KINDS)))
        self.cand = (np.zeros(n_q), np.zeros(n_q, np.int64), np.zeros(n_q, np.int64),
                     np.zeros(n_q, np.bool_))
        for c in range(clients):  # every client starts thinking at 0, in client order
            self._wake(c)

    def _wake(self, client: int) -> None:
        """Start ``client`` at time 0: it thinks first (its think time drawn now)."""
        cur, w = self.cur, 0.0
        if self.think_on:
            w, cur[ev.THINK] = 0.0 + self.draws.thinks[cur[ev.THINK]], cur[ev.THINK] + 1
        cur[ev.N_CLI] = push(*self.cli, cur[ev.N_CLI], w, cur[ev.SEQ], client, 0)
        cur[ev.SEQ] += 1

    def step(self) -> int:
        """Run the loop until it ends or needs something; returns its status."""
        srv, load, closed = self.sc.server, self.rep.requests, self.closed
        plans = self.plans
        return ev.events(
            tuple(self.reqs), self.queues, self.svc,
            (plans.keys, plans.ids, plans.n, plans.slot, plans.batch, plans.leave, plans.kind,
             plans.sizes), tuple(self.out), *self.fin, *self.cli,
            self.draws.thinks if self.think_on else np.zeros(1),
            self._routes(),
            self.cur, self.aux, self.n_open, self.cap, self.routing, srv.max_batch,
            srv.max_wait_ms / 1000.0, self.end, self.k, srv.exit_mode.consults_early_exits,
            self.fixed, self.svc[0].shape[0], self.breakdown, StageKind.OVERHEAD.code,
            self.think_on, load.max_requests if closed and load.max_requests is not None else -1,
            load.duration_s if closed and load.duration_s is not None else np.inf,
            srv.routing != "shared", self.scratch, *self.cand, self.ctrl is not None,
            manager_arrays(self.ctrl, self.lv_ex, self.draws.samples if closed else self.own))

    def _routes(self) -> np.ndarray:
        """Pre-drawn random routes: a closed loop's (drawn as clients submit), an open loop's
        (the replication's)."""
        if self.closed:
            return self.draws.routes if self.draws.routes.size else np.zeros(1, np.int64)
        routes = self.rep.routes
        return np.zeros(1, np.int64) if routes is None else routes.astype(np.int64, copy=False)

    def answer(self, status: int) -> None:
        """Supply what the loop asked for: a batch shape's schedule, a noise chunk, room."""
        aux, k, srv = self.aux, self.k, self.sc.server
        if status == ev.NEED_PLAN:
            going = tuple(int(g) for g in aux[1:k]) if srv.exit_mode.consults_early_exits else ()
            self.plans.add(int(aux[k]), *compile_plan(self.sc.service, srv.exit_mode,
                                                       self.active, int(aux[0]), going))
        elif status == ev.NEED_NOISE:
            r, c = int(aux[0]), int(aux[1])
            while self.chunk_of[r] < c:
                self.noise[r] = self.rep.noise[r].draw_chunk()
                self.chunk_of[r] += 1
        elif status == ev.NEED_WINDOW:  # a manager's window or history is full
            self.ctrl.make_room(srv.max_batch)
        elif status == ev.NEED_HEAP:  # finishes pending on one instant (stages of no time)
            self.fin = tuple(_grow(list(self.fin), 2 * self.fin[0].shape[0], [0.0, 0]))
        else:  # NEED_ROOM: a closed loop ran past the requests there is room for
            old, self.cap = self.cap, self.cap * 2
            self.draws.extend(self.cap)
            reqs, out = self.reqs, self.out
            self.reqs = _grow(reqs[:8], self.cap, [0.0, 0, -1, -1, 0.0, 0.0, 0, 0]) + (
                _grow(reqs[8:], self.cap, [0.0]) if self.breakdown else reqs[8:])
            self.reqs[1][old:] = self.draws.exits[old:]  # served ones keep where they left
            self.out = _grow(out[:6], self.cap, [0] * 6) + _grow(out[6:], self.cap + 1, [0])

    def records(self) -> RunRecords:
        samples = self.draws.samples if self.closed else self.rep.requests.samples
        return _records(self.reqs, self.out, int(self.cur[ev.J]), int(self.cur[ev.NB]),
                        samples, self.breakdown)


def run_events(scenario: Scenario, rep: Replication, breakdown: bool = True) -> RunRecords:
    """Simulate one replication with join-shortest-queue routing or closed-loop clients (a
    static policy) on the compiled event loop."""
    run = _EventRun(scenario, rep, breakdown)
    while (status := run.step()) != ev.DONE:
        run.answer(status)
    return run.records()


def _records(reqs: list[np.ndarray], out: list[np.ndarray], n: int, nb: int,
             samples: np.ndarray, breakdown: bool) -> RunRecords:
    """The run's records from the loop's request and batch arrays (``n`` requests in
    submission order, ``nb`` batches in dispatch order)."""
    arr_t, ex, _nxt, _client, q_disp, q_fin, q_batch, _members, parts = reqs
    o_size, o_rep, o_local, o_disp, o_fin, o_sizes, _start = (a[:nb] for a in out)
    which = q_batch[:n]
    replica, local = o_rep[which], o_local[which]
    order, gid = number_batches(replica, local, o_rep, o_local, o_disp, which)
    return RunRecords(
        arrival=arr_t[:n], sample=samples[:n].astype(np.int64), dispatch=q_disp[:n],
        finish=q_fin[:n], exit=ex[:n], replica=replica, batch=gid, batch_replica=o_rep[order],
        batch_dispatch=o_disp[order], batch_finish=o_fin[order], batch_sizes=o_sizes[order],
        parts=parts[:n] if breakdown else None)
