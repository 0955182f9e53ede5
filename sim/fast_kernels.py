"""The compiled kernels of the fast engine's batch loop (numba, ``cache=True``).

:mod:`offramp.sim.fast_numba` prepares their arrays and answers what they hand back; see it
for what the loop does. Every function here is compiled once per machine; none exists where
numba is not installed (``numba`` is then None). numba's cache notices a change to a compiled
function's own file only: after editing ``_bisect_right`` (which the batching rule and the
wake-up's compiled twins call from other files), remove the ``*.nbi``/``*.nbc`` files under
``core/__pycache__`` and ``sim/__pycache__``.
"""

from __future__ import annotations

import math
import types

import numpy as np

from offramp.core import batching
from offramp.core.execution import ASIDE, STARTS, WAITS
from offramp.core.modes import StageKind

from . import service
from .service import ROWS_PER_CHUNK

try:  # numba is optional: the pure-Python loop is the fallback
    import numba
except ImportError:  # pragma: no cover - exercised where numba is not installed
    numba = None


DONE, NEED_PLAN, NEED_NOISE = range(3)
# A compiled schedule stores each stage's kind code and its lane (core.execution.lane_code) in
# one number: kind | lane << LANE_SHIFT; a stage at or above LANED has a lane to mind.
LANE_SHIFT = 3
KIND_MASK, LANED = (1 << LANE_SHIFT) - 1, 1 << LANE_SHIFT
CHECK = StageKind.CHECK.code  # a wait for a lookup is check time

if numba is not None:
    @numba.njit(cache=True)
    def _bisect_right(a, x, lo, hi):  # bisect.bisect_right, for arrays
        while lo < hi:
            mid = (lo + hi) // 2
            if x < a[mid]:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _compiled(fn, **names):
        """``fn`` compiled as written, its global ``names`` bound to compiled twins."""
        clone = types.FunctionType(fn.__code__, {**fn.__globals__, **names}, fn.__name__,
                                   fn.__defaults__, fn.__closure__)
        return numba.njit(cache=True)(clone)

    # The batching rule, one home: core/batching.py's functions themselves, compiled.
    _dispatch_time = _compiled(batching.dispatch_time)
    _dispatch = _compiled(batching.dispatch, dispatch_time=_dispatch_time,
                          bisect_right=_bisect_right)

    @numba.njit(cache=True)
    def _slot_of(keys, key):
        """Where ``key`` is, or the empty slot (-1) it would take: open addressing with linear
        probing over a power-of-two table (the batch shapes compiled so far)."""
        mask = keys.size - 1
        h = ((key * 2654435761) ^ (key >> 16)) & mask
        while keys[h] != -1 and keys[h] != key:
            h = (h + 1) & mask
        return h

    @numba.njit(cache=True)
    def _insert(keys, values, key, value):
        h = _slot_of(keys, key)
        keys[h], values[h] = key, value

    @numba.njit(cache=True)
    def _lane_step(kl, dt, t, s, leave, ends, breakdown, acc, side, snap):
        """One stage of ``dt`` s with a lane (``kl`` at or above LANED), by
        core.execution.timeline's rule: the backbone's clock ``t``, the lookup's ``s``; a wait
        for a lookup counts as check time, a lookup's leavers' time by
        kind is the backbone's when it started plus its own (``side``). Returns (t, s)."""
        lane = kl >> LANE_SHIFT
        if lane & WAITS and s > t:
            if breakdown:
                acc[CHECK] += s - t
            t = s
        if lane & ASIDE:
            if lane & STARTS:
                s = t
                if breakdown:
                    side[:] = acc
            return t, _advance(s, dt, kl, leave, ends, breakdown, side, snap)
        return _advance(t, dt, kl, leave, ends, breakdown, acc, snap), s

    @numba.njit(cache=True)
    def _advance(clock, dt, kl, leave, ends, breakdown, acc, snap):
        """``clock`` + ``dt`` for a stage of kind ``kl & KIND_MASK`` that may end exit
        ``leave``'s leavers (their finish and time by kind ``acc``)."""
        clock += dt
        if breakdown:
            acc[kl & KIND_MASK] += dt
        if leave >= 0:
            ends[leave] = clock
            if breakdown:
                snap[leave, :] = acc
        return clock

    # The wake-up's interpolation (ServiceTimes.wake_s), compiled from the same function.
    _wake_s = _compiled(service.on_grid, bisect_right=_bisect_right)

    @numba.njit(cache=True)
    def _loop(arr, exits, end, big_b, wait, k_exits, consults, servers, free_t, local,
              base, sigma, fixed, noise, chunk_of, width, slow_at, slow_x, wake, grid,
              edges, state_f, tail, p_keys, p_ids, p_n, p_slot, p_batch, p_leave, p_kind, p_sizes,
              breakdown, overhead, cursor, aux, o_size, o_rep, o_local, o_disp, o_fin, o_sizes,
              q_disp, q_fin, q_batch, o_parts):
        """The batch loop (see the module docstring); returns DONE or what it needs: for
        NEED_PLAN ``aux`` holds the batch's size, its survivors past each exit and, last, its
        shape's key; for NEED_NOISE the replica and the chunk. ``overhead``: the overhead
        kind's code (the wake-up counts there). One function on purpose: split into compiled
        helpers (even inlined) it ran 30% slower (benchmarks/mm1_peers.py, 2026-12-06); the
        event loop's ``fast_events._stages`` is the stage timing below as a function."""
        n = arr.size
        i, nb = cursor[0], cursor[1]
        radix = big_b + 1
        acc = np.zeros(o_parts.shape[1])
        side = np.zeros(o_parts.shape[1])  # a lookup's leavers' time by stage kind
        snap = np.zeros((k_exits, o_parts.shape[1]))  # acc when each exit's leavers finish
        ends = np.zeros(k_exits)  # when each exit's leavers finish
        while i < n:
            s = 0  # the free server: least (free time, replica), as the heap pops it
            for q in range(1, servers.size):
                if free_t[q] < free_t[s] or (free_t[q] == free_t[s] and servers[q] < servers[s]):
                    s = q
            f, r = free_t[s], servers[s]
            d, j = _dispatch(arr, i, f, big_b, wait, end)
            size = j - i
            key = 0  # the batch's shape: survivors past each consulted exit, then its size
            if consults:
                for k in range(k_exits - 2, -1, -1):
                    going = 0
                    for q in range(i, j):
                        if exits[q] > k:
                            going += 1
                    key = key * radix + going
                    aux[1 + k] = going
            key = key * radix + size
            h = _slot_of(p_keys, key)
            if p_keys[h] != key:
                cursor[0], cursor[1] = i, nb
                aux[0], aux[k_exits] = size, key
                return NEED_PLAN
            pid = p_ids[h]
            m = local[s]
            o = 0
            if not fixed:
                c = m // ROWS_PER_CHUNK
                if chunk_of[r] != c:
                    cursor[0], cursor[1] = i, nb
                    aux[0], aux[1] = r, c
                    return NEED_NOISE
                o = (m - c * ROWS_PER_CHUNK) * width
            x = slow_x[r, _bisect_right(slow_at[r], d, 0, slow_at.shape[1]) - 1]
            w = 0.0 if wake.shape[1] == 0 else _wake_s(wake[size], grid, d - f)
            t = d if wake.shape[1] == 0 else d + w
            fac = state_f[_bisect_right(edges, d - f, 0, edges.size)]
            ends[:] = np.nan  # every exit a request leaves at is set below (a gap would show)
            if breakdown:
                acc[:] = 0.0
                acc[overhead] = w
            lk = t  # the lookup lane's clock (exit mode async)
            for st in range(p_n[pid]):  # base · exp(σ·z) · slowdown · loop factor, in order
                slot, b = p_slot[pid, st], p_batch[pid, st]
                dt = base[slot, b] * math.exp(sigma[slot, b] * noise[r, o + slot]) * x * fac[slot]
                leave, kl = p_leave[pid, st], p_kind[pid, st]
                if kl >= LANED:
                    t, lk = _lane_step(kl, dt, t, lk, leave, ends, breakdown, acc, side, snap)
                    continue
                t += dt
                if breakdown:
                    acc[kl] += dt
                if leave >= 0:
                    ends[leave] = t
                    if breakdown:
                        snap[leave, :] = acc
            t = lk if lk > t else t
            if tail.size:
                t += tail[size]
            o_size[nb], o_rep[nb], o_local[nb], o_disp[nb], o_fin[nb] = size, r, m, d, t
            o_sizes[nb, :] = p_sizes[pid]
            for q in range(i, j):  # each request: its batch, dispatch, and its exit's finish
                q_disp[q], q_fin[q], q_batch[q] = d, ends[exits[q]], nb
                if breakdown:  # ... and its time by stage kind until then
                    o_parts[q, :] = snap[exits[q], :]
            local[s] = m + 1
            free_t[s] = t
            nb += 1
            i = j
        cursor[0], cursor[1] = i, nb
        return DONE
