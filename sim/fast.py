"""The fast engine: batch-level event loop for static policies and open-loop workloads.

Every request's exit is known up front (the policy is static), so a batch's whole schedule is
computed when it is dispatched; the loop touches batches, not requests, and per-request times
are filled in with NumPy at the end. It must agree with :mod:`offramp.sim.reference`.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from typing import Any

import numpy as np

from offramp.core.batching import dispatch

from .fast_steps import compile_plan, run_steps
from .records import N_KINDS, RunRecords, number_batches
from .scenario import Replication, Scenario
from .workload import ClosedLoop, Replay


def needs_events(scenario: Scenario) -> bool:
    """Whether the next step depends on what has finished (join-shortest-queue routing on
    several replicas, closed-loop clients, a policy that watches the server): the event loop
    of :mod:`.fast_dynamic` runs it."""
    srv = scenario.server
    return (isinstance(scenario.workload, ClosedLoop) or not scenario.policy.is_static
            or (srv.routing == "jsq" and srv.replicas > 1))


def supports(scenario: Scenario) -> str | None:
    """None if the fast engine can run this scenario, else the reason it cannot."""
    from . import fast_manager, fast_numba

    stateful = not scenario.policy.is_static
    if stateful and not fast_manager.manages(scenario):
        return f"policy {scenario.policy.name!r} is stateful"
    if scenario.server.exit_mode.rebatches:
        return "exit mode rebatch (survivors batched again across batches)"
    if not needs_events(scenario):
        return None
    what = ("closed-loop clients" if isinstance(scenario.workload, ClosedLoop)
            else f"stateful policy {scenario.policy.name!r}" if stateful
            else "join-shortest-queue routing")
    if not fast_numba.available():
        return f"{what} run on the fast engine only where numba is installed"
    if not fast_numba.fits(scenario.service, scenario.server.max_batch):
        return f"{what}: batch shapes of this model do not fit the compiled loop's keys"
    wl = scenario.workload
    if (isinstance(wl, ClosedLoop) and wl.think_ms == 0 and scenario.server.replicas > 1
            and scenario.service.dist == "fixed"):
        # Clients that never think, with stage times without noise, put several replicas'
        # events on the same instant, where the order (and so who goes where) is SimPy's own.
        return f"{what} without think time on several replicas with stage times without noise"
    if isinstance(wl, Replay) and scenario.service.dist == "fixed":
        # Recorded arrival times and stage times without noise can put an arrival on the very
        # instant a request finishes, where SimPy takes whichever it scheduled first.
        return f"{what} of recorded arrivals with stage times without noise"
    return None


def _serve_queue(scenario: Scenario, rep: Replication, arr: list[float], exits: np.ndarray,
                 servers: list[int], end: float, breakdown: bool) -> dict[str, np.ndarray | None]:
    """Serve one FIFO queue (arrival times ``arr``) by ``servers``; return the batch columns
    (size, replica, local, dispatch, finish, sizes: see :func:`_columns`) and per request, in
    queue order, ``req_dispatch``, ``req_finish``, ``req_batch`` (its batch's row) and
    ``parts`` (its time by stage kind; None without ``breakdown``).

    A free server takes the next batch by the batching rule (:func:`offramp.core.dispatch`):
    when B requests are waiting or the oldest has waited max_wait, whichever is first; once the
    stream has ended (``end``, the last arrival of the whole run) the rest go at once.
    Stage times are added in the same order as the reference engine adds them, so both give
    the same floating-point timestamps. (:mod:`offramp.sim.fast_numba` runs this loop compiled.)
    """
    svc, srv = scenario.service, scenario.server
    big_b, wait, mode = srv.max_batch, srv.max_wait_ms / 1000.0, srv.exit_mode
    k_exits, n, slow, noise = svc.n_exits, len(arr), srv.slowdown(), rep.noise
    # reach[k][i]: how many of the first i requests go on past exit k (exit index > k).
    reach = [np.concatenate([[0], np.cumsum(exits > k, dtype=np.int64)]).tolist()
             for k in range(k_exits - 1)] if mode.consults_early_exits else []
    base, wake, tail, state = svc.base, svc.wake, svc.tail, svc.state
    active = tuple(bool(a) for a in scenario.policy.active_exits(k_exits))
    _bisect, _dispatch = bisect_right, dispatch
    # A batch's schedule depends only on its size and survivor counts: compile each once.
    compiled: dict[tuple, tuple] = {}
    unscaled = [1.0] * len(base)  # no loop-state factors: every stage x 1.0 (exact)
    local, free = dict.fromkeys(servers, 0), [(0.0, r) for r in servers]  # sorted: a heap
    rows, o_ends, o_sizes, o_parts = [], [], [], []
    i = 0
    while i < n:
        f, r = heapq.heappop(free)
        d, j = _dispatch(arr, i, f, big_b, wait, end)
        size = j - i
        m = local[r]
        local[r] = m + 1
        o, z = noise[r].offset(m), noise[r].flat
        at, factors = slow[r]
        x = factors[_bisect(at, d) - 1]
        key = (size, *[rk[j] - rk[i] for rk in reach])
        entry = compiled.get(key)
        if entry is None:
            entry = compiled[key] = compile_plan(svc, mode, active, size, key[1:])
        steps, sizes = entry
        # First the loop's wake-up cost after an idle spell, where the profile measured one.
        w = 0.0 if wake is None else svc.wake_s(size, d - f)
        t = d if wake is None else d + w
        # Every stage scaled by the replica's idle time before the batch, where measured.
        fac = unscaled if state is None else state.at_dispatch(d - f)
        parts = [0.0] * (k_exits * N_KINDS) if breakdown else None
        t, ends = run_steps(steps, z, o, x, fac, t, k_exits, w, parts)
        if tail is not None:  # the loop's own time after the last stage: busy, nobody waits
            t += tail[size]
        rows.append((size, r, m, d, t))
        o_ends.extend(ends)
        o_sizes.extend(sizes)
        o_parts.extend(parts or ())
        heapq.heappush(free, (t, r))
        i = j
    return _per_request(_columns(rows, o_sizes, k_exits), o_ends,
                        o_parts if breakdown else None, exits, k_exits)


def _per_request(cols: dict[str, Any], ends: list[float], parts: list[float] | None,
                 exits: np.ndarray, k_exits: int) -> dict[str, Any]:
    """``cols`` with, per request: its batch (batches take the queue in FIFO order), dispatch,
    its exit's finish (``ends``: each batch's, exit-major) and its time by stage kind until
    then (``parts``: each batch's at each exit; None: not recorded)."""
    which = np.repeat(np.arange(cols["size"].size), cols["size"])
    ends_b = np.array(ends, dtype=float).reshape(-1, k_exits)
    cols.update(req_dispatch=cols["dispatch"][which], req_finish=ends_b[which, exits],
                req_batch=which, parts=None if parts is None else np.array(parts).reshape(
                    -1, k_exits, N_KINDS)[which, exits])
    return cols


def _columns(rows: list[tuple], sizes: list[int], k_exits: int) -> dict[str, np.ndarray | None]:
    """Batch columns as arrays: size, replica, local (the replica's batch count), dispatch,
    finish; sizes (n_batches, K: the batch size at each segment)."""
    names = ("size", "replica", "local", "dispatch", "finish")
    cols: dict[str, np.ndarray | None] = {
        name: np.array([row[c] for row in rows], dtype=np.int64 if c < 3 else float)
        for c, name in enumerate(names)}
    cols["sizes"] = np.array(sizes, dtype=np.int64).reshape(-1, k_exits)
    return cols


def _exits(scenario: Scenario, samples: np.ndarray) -> np.ndarray:
    """Every request's exit, up front (the policy is static; the last where none is consulted)."""
    trace, policy = scenario.trace, scenario.policy
    k_exits = trace.n_exits
    if not scenario.server.exit_mode.consults_early_exits:
        return np.full(samples.size, k_exits - 1, dtype=np.int64)
    exits = policy.exit_index(trace, samples).astype(np.int64)
    if not policy.active_exits(k_exits)[exits].all():
        raise ValueError(f"policy {policy.name!r} exits samples at a disabled exit head")
    return exits


def _queues(server: Any, routes: np.ndarray | None) -> list[tuple[np.ndarray | None, list[int]]]:
    """(requests, servers) of each FIFO queue: one for the whole stream (one replica, or
    replicas sharing it: requests None), else one per replica with the requests routed to it."""
    if server.routing == "shared" or server.replicas == 1:
        return [(None, list(range(server.replicas)))]
    return [(np.flatnonzero(routes == r), [r]) for r in range(server.replicas)]


def run_fast(scenario: Scenario, rep: Replication, breakdown: bool = True) -> RunRecords:
    """Simulate one open-loop replication with a static policy; ``breakdown``: record each
    request's time by stage kind (searches that need only latencies leave it off). The batch
    loop runs compiled (:mod:`.fast_numba`) where numba is installed, else in Python."""
    from . import fast_numba

    reason = supports(scenario)
    if reason:
        raise ValueError(f"fast engine cannot run this study: {reason}")
    if needs_events(scenario):
        from .fast_dynamic import run_events

        return run_events(scenario, rep, breakdown)
    policy, server = scenario.policy, scenario.server
    k_exits = scenario.trace.n_exits
    arrivals, samples = rep.requests.times, rep.requests.samples
    n = arrivals.size
    exits = _exits(scenario, samples)
    compiled = fast_numba.available() and fast_numba.fits(scenario.service, server.max_batch)
    active = tuple(bool(a) for a in policy.active_exits(k_exits))
    end = float(arrivals[-1]) if n else 0.0

    def serve(idx: np.ndarray | None, servers: list[int]) -> dict[str, Any]:
        arr, ex = (arrivals, exits) if idx is None else (arrivals[idx], exits[idx])
        if compiled:
            return fast_numba.serve_queue(scenario.service, server, server.exit_mode, active,
                                          arr, ex, servers, rep.noise, end, breakdown)
        return _serve_queue(scenario, rep, arr.tolist(), ex, servers, end, breakdown)

    done = [(idx, serve(idx, servers)) for idx, servers in _queues(server, rep.routes)
            if n and (idx is None or idx.size)]
    if len(done) == 1 and done[0][0] is None:  # one queue: its columns are the run's, as they are
        cols = done[0][1]
        dispatch, finish, parts = cols["req_dispatch"], cols["req_finish"], cols["parts"]
        replica, local = cols["replica"][cols["req_batch"]], cols["local"][cols["req_batch"]]
        b, batch_of = cols, cols["req_batch"]
    else:
        dispatch, finish = np.empty(n), np.empty(n)
        replica, local = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        parts = np.empty((n, N_KINDS)) if breakdown else None
        for idx, cols in done:
            which = cols["req_batch"]
            dispatch[idx], finish[idx] = cols["req_dispatch"], cols["req_finish"]
            replica[idx], local[idx] = cols["replica"][which], cols["local"][which]
            if breakdown:
                parts[idx] = cols["parts"]
        if not done:  # no request at all: no batches
            done.append((None, _columns([], [], k_exits)))
        b = {name: np.concatenate([c[name] for _, c in done])
             for name in ("replica", "local", "dispatch", "finish", "sizes")}
        batch_of = None
    order, gid = number_batches(replica, local, b["replica"], b["local"], b["dispatch"], batch_of)
    return RunRecords(
        arrival=arrivals, sample=samples, dispatch=dispatch, finish=finish, exit=exits,
        replica=replica, batch=gid, batch_replica=b["replica"][order],
        batch_dispatch=b["dispatch"][order], batch_finish=b["finish"][order],
        batch_sizes=b["sizes"][order],
        parts=parts,
    )
