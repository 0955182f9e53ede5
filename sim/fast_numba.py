"""The fast engine's batch loop compiled with numba (``cache=True``), its state in NumPy arrays.

It runs the same loop as :func:`offramp.sim.fast._serve_queue` — the batching rule of
:mod:`offramp.core.batching` (compiled from that very function), the batch schedules the
execution rule gives (compiled once per batch shape by :func:`offramp.sim.fast_steps.compile_plan`,
in Python), the same noise rows (:meth:`NoiseStream.draw_chunk`), slowdown, wake-up, loop-state
factors and tail — with the floating-point operations in the same order, so both give the
same timestamps. Whatever the compiled loop lacks (a batch shape not compiled yet, the next
noise chunk of a replica) it hands back to Python, which supplies it
and resumes the loop where it stopped.

Where numba is absent, or ``OFFRAMP_NUMBA=0``, :mod:`offramp.sim.fast` runs its pure-Python
loop instead.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from offramp.core.modes import ExitMode, StageKind

from .fast_kernels import DONE, LANE_SHIFT, NEED_PLAN, numba
from .records import N_KINDS
from .service import ROWS_PER_CHUNK, ServiceTimes

if numba is not None:
    from .fast_kernels import _insert, _loop


def available() -> bool:
    """Whether the compiled loop runs (numba importable, not switched off by OFFRAMP_NUMBA=0)."""
    return numba is not None and os.environ.get("OFFRAMP_NUMBA", "1") != "0"


class _Plans:
    """The batch schedules compiled so far, as arrays the loop reads (grown as needed)."""

    def __init__(self, k_exits: int):
        self.keys, self.ids = np.full(256, -1, np.int64), np.zeros(256, np.int64)  # key -> row
        self.k = k_exits
        self._alloc(64, 4 * k_exits + 4)
        self.count = 0

    def _alloc(self, rows: int, width: int) -> None:
        old = getattr(self, "n", None)
        new = {"n": np.zeros(rows, np.int64), "slot": np.zeros((rows, width), np.int64),
               "batch": np.zeros((rows, width), np.int64),
               "leave": np.full((rows, width), -1, np.int64),
               "kind": np.zeros((rows, width), np.int64),
               "sizes": np.zeros((rows, self.k), np.int64)}
        if old is not None:
            for name, arr in new.items():
                cur = getattr(self, name)
                arr[(slice(0, cur.shape[0]),) + tuple(slice(0, x) for x in cur.shape[1:])] = cur
        for name, arr in new.items():
            setattr(self, name, arr)

    def add(self, key: int, steps: list[list], sizes: list[int]) -> None:
        rows, width = self.slot.shape
        if self.count == rows or len(steps) > width:
            self._alloc(2 * rows if self.count == rows else rows, max(width, 2 * len(steps)))
        p = self.count
        self.n[p] = len(steps)
        for st, (_tb, _ts, slot, b, leave, kind, lane) in enumerate(steps):
            self.slot[p, st], self.batch[p, st], self.leave[p, st], self.kind[p, st] = \
                slot, b, leave, kind | lane << LANE_SHIFT
        self.sizes[p] = sizes
        if 2 * (self.count + 1) > self.keys.size:  # keep the table at most half full
            keys, ids = np.full(2 * self.keys.size, -1, np.int64), np.zeros(2 * self.keys.size,
                                                                            np.int64)
            for old in np.flatnonzero(self.keys != -1):
                _insert(keys, ids, self.keys[old], self.ids[old])
            self.keys, self.ids = keys, ids
        _insert(self.keys, self.ids, key, p)
        self.count += 1


def fits(svc: ServiceTimes, max_batch: int) -> bool:
    """Whether batch shapes of this model fit the loop's int64 keys."""
    return (max_batch + 1) ** svc.n_exits < 2 ** 62


def _tables(svc: ServiceTimes, srv: Any, replicas: int) -> dict[str, np.ndarray]:
    """The service tables as arrays: slowdown steps per replica (padded), wake-up, loop state
    (one all-ones row where there is none), tail."""
    slow = srv.slowdown()
    width = max(len(at) for at, _ in slow)
    slow_at = np.full((replicas, width + 1), np.inf)
    slow_x = np.ones((replicas, width + 1))
    for r, (at, xs) in enumerate(slow):
        slow_at[r, :len(at)], slow_x[r, :len(xs)] = at, xs
    if svc.wake is None:
        wake, grid = np.zeros((svc.max_batch + 1, 0)), np.zeros(1)
    else:
        wake, grid = np.array(svc.wake, dtype=float), np.array(svc.IDLE_GRID_S)
    if svc.state is None:
        edges, state_f = np.zeros(0), np.ones((1, svc.width))
    else:
        edges = np.array(svc.state.idle_edges_s, dtype=float)
        state_f = np.array(svc.state.factor, dtype=float)
    tail = np.zeros(0) if svc.tail is None else np.array(svc.tail, dtype=float)
    return {"slow_at": slow_at, "slow_x": slow_x, "wake": wake, "grid": grid, "edges": edges,
            "state_f": state_f, "tail": tail}


def serve_queue(svc: ServiceTimes, srv: Any, mode: ExitMode, active: tuple[bool, ...],
                arr: np.ndarray, exits: np.ndarray, servers: list[int], noise: list,
                end: float, breakdown: bool) -> dict[str, np.ndarray]:
    """Serve one FIFO queue by ``servers`` (as :func:`offramp.sim.fast._serve_queue`); returns
    the same columns."""
    from .fast_steps import compile_plan

    k_exits = svc.n_exits
    n = arr.size
    replicas = srv.replicas
    tables = _tables(svc, srv, replicas)
    fixed = svc.dist == "fixed"
    width = svc.width
    chunk = np.zeros((replicas, width if fixed else ROWS_PER_CHUNK * width))
    chunk_of = np.full(replicas, -1, np.int64)
    # The schedules compiled so far for these tables, mode and exits: a memo of the execution
    # rule (pure), kept on the tables so replications and capacity probes share it.
    memo = svc.__dict__.setdefault("_compiled_plans", {})
    plans = memo.setdefault((mode, active, srv.max_batch), _Plans(k_exits))
    # Room for as many batches as requests (np.empty: only the pages written are ever touched).
    out = [np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n),
           np.empty(n), np.empty((n, k_exits), np.int64)]
    # Per request, in queue order: dispatch, finish, batch row; time by stage kind.
    per = [np.empty(n), np.empty(n), np.empty(n, np.int64),
           np.empty((n if breakdown else 1, N_KINDS))]
    cursor, aux = np.zeros(2, np.int64), np.zeros(k_exits + 1, np.int64)
    free_t = np.zeros(len(servers))
    local = np.zeros(len(servers), np.int64)
    consults = mode.consults_early_exits
    base, sigma = np.array(svc.base), np.array(svc.sigma)
    srv_ids = np.array(servers, np.int64)
    while True:
        status = _loop(arr, exits, end, srv.max_batch, srv.max_wait_ms / 1000.0, k_exits,
                       consults, srv_ids, free_t, local, base, sigma, fixed, chunk, chunk_of,
                       width, tables["slow_at"], tables["slow_x"], tables["wake"],
                       tables["grid"], tables["edges"], tables["state_f"], tables["tail"],
                       plans.keys, plans.ids, plans.n, plans.slot, plans.batch, plans.leave, plans.kind,
                       plans.sizes, breakdown, StageKind.OVERHEAD.code, cursor, aux, *out, *per)
        if status == DONE:
            break
        if status == NEED_PLAN:  # aux: size, survivors past each exit, the shape's key
            size = int(aux[0])
            going = tuple(int(g) for g in aux[1:k_exits]) if consults else ()
            plans.add(int(aux[k_exits]), *compile_plan(svc, mode, active, size, going))
        else:  # NEED_NOISE
            r, c = int(aux[0]), int(aux[1])
            while chunk_of[r] < c:  # rows are used in order: the next chunk, drawn as always
                chunk[r] = noise[r].draw_chunk()
                chunk_of[r] += 1
    nb = int(cursor[1])
    names = ("size", "replica", "local", "dispatch", "finish", "sizes")
    cols = {name: a[:nb] for name, a in zip(names, out, strict=True)}
    cols.update(req_dispatch=per[0], req_finish=per[1], req_batch=per[2],
                parts=per[3] if breakdown else None)
    return cols
