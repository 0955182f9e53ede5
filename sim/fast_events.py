"""The fast engine's event loop for servers whose next step depends on their state (numba).

JSQ routing and closed-loop clients need, at each arrival, what has finished so far (the
batch loop of :mod:`.fast_kernels` serves one queue to its end). This loop keeps batches as
its unit but takes events in time order:

- an **arrival** (the next open-loop request, or a closed-loop client whose think time ended)
  is routed (shared queue, round robin, random from pre-drawn routes, or the queue with the
  fewest requests not yet finished) and queued;
- a **finish** (the leavers of one exit of one batch) lowers its replica's outstanding count
  and, in a closed loop, starts each leaver's client thinking, in batch order;
- a **dispatch** happens when a queue's next batch, by the batching rule of
  :mod:`offramp.core.batching` (compiled from that function), would close before any event
  that could still add to it; its whole schedule is computed then, as in the batch loop.

Ties go as in SimPy: a finish before an arrival or a dispatch at one instant, an arrival
before a dispatch, events of one kind in the order scheduled. Where SimPy's internal order
decides (two replicas' events, or an arrival and a finish, on one instant) the studies that
can meet it go to the reference (:func:`offramp.sim.fast.supports`).

Plain Python over arrays, compiled by numba; what it lacks (a batch shape, a noise chunk,
room) it hands back to :mod:`.fast_dynamic`, then resumes.
"""

from __future__ import annotations

import math

import numpy as np

from .fast_heap import pop as _pop
from .fast_heap import push as _push
from .fast_kernels import LANED, NEED_NOISE, NEED_PLAN, numba
from .fast_queues import (  # noqa: F401 (routing codes and state slots, used by fast_dynamic)
    JSQ,
    N_CLI,
    N_FIN,
    N_MEM,
    NB,
    NOW,
    OPEN,
    RANDOM,
    ROUND_ROBIN,
    SEQ,
    SHARED,
    THINK,
    J,
    _arrive,
    _candidate,
)
from .service import ROWS_PER_CHUNK

if numba is not None:  # the wake-up and the plan lookup, compiled from their one home
    from .fast_kernels import _bisect_right as _bisect
    from .fast_kernels import _lane_step, _slot_of, _wake_s
    from .fast_manager import begin_batch as _begin_batch
    from .fast_manager import observe as _observe
    from .fast_manager import room as _room

DONE, NEED_ROOM, NEED_HEAP, NEED_WINDOW = 0, 3, 4, 5


def _shape(q, take, ex, nxt, head, k_exits, consults, big_b, aux):
    """The batch loop's key of queue ``q``'s first ``take`` requests; ``aux[1 + k]``: how
    many go on past exit k."""
    key = 0
    radix = big_b + 1
    if consults:
        for k in range(k_exits - 2, -1, -1):
            going = 0
            x = head[q]
            for _ in range(take):
                if ex[x] > k:
                    going += 1
                x = nxt[x]
            key = key * radix + going
            aux[1 + k] = going
    return key * radix + take


def _stages(pid, r, m, d, f, size, svc, plans, fixed, width, breakdown, overhead, ends, snap,
            accs, stall):
    """Run batch row ``pid``'s schedule on replica ``r`` (its ``m``-th batch) from ``d``
    (free since ``f``; a manager's switch stalls it ``stall`` s first): base · exp(σ·z) ·
    slowdown · loop factor per stage, in the batch loop's order; fills ``ends`` and ``snap``
    (``accs``: two rows of time by kind, the backbone's and a lookup's); returns when the
    replica is free. The batch loop (``fast_kernels._loop``) has these lines
    inline: calling this, M/M/1 ran 41% slower (2.85M vs 4.87M customers/s,
    benchmarks/mm1_peers.py, 2026-12-06)."""
    base, sigma, noise, _chunk_of, slow_at, slow_x, wake, grid, edges, state_f, tail = svc
    _keys, _ids, p_n, p_slot, p_batch, p_leave, p_kind, _sizes = plans
    o = 0 if fixed else (m % ROWS_PER_CHUNK) * width
    x = slow_x[r, _bisect(slow_at[r], d, 0, slow_at.shape[1]) - 1]
    w = 0.0 if wake.shape[1] == 0 else _wake_s(wake[size], grid, d - f)
    t = d + stall if stall > 0 else d
    t = t if wake.shape[1] == 0 else t + w
    fac = state_f[_bisect(edges, d - f, 0, edges.size)]
    ends[:] = np.nan
    acc, side = accs[0], accs[1]
    if breakdown:
        acc[:] = 0.0
        acc[overhead] = stall + w
    s = t  # the lookup lane's clock (exit mode async)
    for st in range(p_n[pid]):
        slot, b = p_slot[pid, st], p_batch[pid, st]
        dt = base[slot, b] * math.exp(sigma[slot, b] * noise[r, o + slot]) * x * fac[slot]
        leave, kl = p_leave[pid, st], p_kind[pid, st]
        if kl >= LANED:
            t, s = _lane_step(kl, dt, t, s, leave, ends, breakdown, acc, side, snap)
            continue
        t += dt
        if breakdown:
            acc[kl] += dt
        if leave >= 0:
            ends[leave] = t
            if breakdown:
                snap[leave, :] = acc
    t = s if s > t else t
    if tail.size:
        t += tail[size]
    return t


def _dispatch_batch(q, s, d, take, cur, aux, reqs, queues, svc, plans, out, fin_t, fin_i,
                    k_exits, consults, big_b, fixed, width, breakdown, overhead, ends, snap,
                    acc, stateful, mgr):
    """Serve queue ``q``'s next ``take`` requests on replica ``s`` from ``d``; schedules the
    finish of each exit its leavers leave at (under a manager, the exits of the level the
    batch begins with). Returns DONE, or what it needs first (and then changes nothing)."""
    arr_t, ex, nxt, _client, q_disp, q_fin, q_batch, members, parts = reqs
    head, _tail, count, _queue_of, _outstanding, free_t, local = queues
    o_size, o_rep, o_local, o_disp, o_fin, o_sizes, b_start = out
    if cur[N_FIN] + k_exits > fin_t.size:  # no room for this batch's finishes
        return NEED_HEAP
    if stateful:
        lv_ex, samples, x = mgr[11], mgr[12], head[q]
        for _ in range(take):
            ex[x] = lv_ex[mgr[0][0], samples[x]]  # st[LEVEL]
            x = nxt[x]
    key = _shape(q, take, ex, nxt, head, k_exits, consults, big_b, aux)
    h = _slot_of(plans[0], key)
    if plans[0][h] != key:
        aux[0], aux[k_exits] = take, key
        return NEED_PLAN
    m = local[s]
    chunk_of = svc[3]
    if not fixed and chunk_of[s] != m // ROWS_PER_CHUNK:
        aux[0], aux[1] = s, m // ROWS_PER_CHUNK
        return NEED_NOISE
    pid = plans[1][h]
    stall = _begin_batch(mgr[0], mgr[3], mgr[9], mgr[10], s) if stateful else 0.0
    t = _stages(pid, s, m, d, free_t[s], take, svc, plans, fixed, width, breakdown, overhead,
                ends, snap, acc, stall)
    nb, m0 = cur[NB], cur[N_MEM]
    o_size[nb], o_rep[nb], o_local[nb], o_disp[nb], o_fin[nb] = take, s, m, d, t
    o_sizes[nb, :] = plans[7][pid]
    b_start[nb] = m0
    x = head[q]
    for u in range(take):
        members[m0 + u] = x
        q_disp[x], q_fin[x], q_batch[x] = d, ends[ex[x]], nb
        if breakdown:
            parts[x, :] = snap[ex[x], :]
        x = nxt[x]
    head[q] = x
    count[q] -= take
    b_start[nb + 1] = m0 + take
    for k in range(k_exits):  # each exit with leavers finishes, in exit order
        if not np.isnan(ends[k]):
            cur[N_FIN] = _push(fin_t, fin_i, cur[N_FIN], ends[k], cur[SEQ], nb, k)
            cur[SEQ] += 1
    local[s] = m + 1
    free_t[s] = t
    cur[NB] = nb + 1
    cur[N_MEM] = m0 + take
    return DONE


def _finish(cur, reqs, queues, out, fin_t, fin_i, cli_t, cli_i, thinks, think_on, routing,
            batcher, stateful, mgr):
    """The leavers of the earliest finishing exit: each lowers its replica's outstanding
    count, is observed by the manager and, in a closed loop, starts its client's think time
    (in batch order).

    A replica with a batcher of its own (``batcher``: not a shared queue) that is free as its
    last leavers leave looks at its queue at once, before those leavers' clients are back:
    ``cur[NOW]`` names that queue (plus one) for the loop to dispatch first if it is due
    (under a manager, only once the batch's last leavers are observed)."""
    arr_t, ex, _nxt, client_of, _d, _f, _b, members, _parts = reqs
    outstanding = queues[4]
    o_rep, b_start = out[1], out[6]
    t, b, k = fin_t[0], fin_i[0, 1], fin_i[0, 2]
    cur[N_FIN] = _pop(fin_t, fin_i, cur[N_FIN])
    later = False
    for u in range(b_start[b], b_start[b + 1]):
        x = members[u]
        if ex[x] != k:
            later = later or ex[x] > k
            continue
        if routing != SHARED:
            outstanding[o_rep[b]] -= 1
        if stateful:
            _observe(mgr[0], mgr[1], mgr[2], mgr[3], mgr[4], mgr[5], mgr[6], mgr[7], mgr[8],
                     t, (t - arr_t[x]) * 1000.0)
        if client_of[x] >= 0:
            w = t
            if think_on:
                w = t + thinks[cur[THINK]]
                cur[THINK] += 1
            cur[N_CLI] = _push(cli_t, cli_i, cur[N_CLI], w, cur[SEQ], client_of[x], 0)
            cur[SEQ] += 1
    if batcher and t == queues[5][o_rep[b]] and not (stateful and later):
        cur[NOW] = queues[3][o_rep[b]] + 1


def _events(reqs, queues, svc, plans, out, fin_t, fin_i, cli_t, cli_i, thinks, routes, cur,
            aux, n_open, cap, routing, big_b, wait, end, k_exits, consults, fixed, width,
            breakdown, overhead, think_on, max_req, duration, batcher, scratch, d_q, s_q,
            take_q, fresh, stateful, mgr):
    """The event loop (see the module docstring); returns DONE or what it needs (as the batch
    loop does, plus NEED_ROOM for more requests, NEED_HEAP for more pending finishes,
    NEED_WINDOW for room in a manager's window or history)."""
    arr_t, nxt = reqs[0], reqs[2]
    head, count, queue_of, free_t = queues[0], queues[2], queues[3], queues[5]
    buf, ends, snap, acc = scratch
    inf = math.inf
    while True:
        if n_open >= 0:
            t_a = arr_t[cur[OPEN]] if cur[OPEN] < n_open else inf
        else:
            t_a = cli_t[0] if cur[N_CLI] > 0 else inf
        t_f = fin_t[0] if cur[N_FIN] > 0 else inf
        qd, d_min = -1, inf
        for q in range(d_q.size):
            if not fresh[q]:
                d_q[q], s_q[q], take_q[q] = _candidate(q, arr_t, nxt, head, count, queue_of,
                                                       free_t, buf, big_b, wait, end)
                fresh[q] = True
            if d_q[q] < d_min:
                qd, d_min = q, d_q[q]
        now = cur[NOW] - 1  # a batcher that looks at its queue the moment it is free
        if now >= 0 and d_q[now] > free_t[s_q[now]]:
            cur[NOW] = 0  # nothing due: it waits, and the leavers' next requests may join
        elif now >= 0:
            qd, d_min, t_a, t_f = now, d_q[now], inf, inf  # due now: it goes as it is
        if t_f < inf and t_f <= t_a and t_f <= d_min:
            if stateful and not _room(mgr[0], mgr[5], mgr[7], big_b):
                return NEED_WINDOW
            _finish(cur, reqs, queues, out, fin_t, fin_i, cli_t, cli_i, thinks, think_on,
                    routing, batcher, stateful, mgr)
        elif t_a < inf and t_a <= d_min:
            q = _arrive(t_a, cur, reqs, queues, cli_t, cli_i, routes, routing, n_open, cap,
                        max_req, duration)
            if q == -2:
                return NEED_ROOM
            if q >= 0:
                fresh[q] = False
        elif qd >= 0:
            status = _dispatch_batch(qd, s_q[qd], d_min, take_q[qd], cur, aux, reqs, queues,
                                     svc, plans, out, fin_t, fin_i, k_exits, consults, big_b,
                                     fixed, width, breakdown, overhead, ends, snap, acc,
                                     stateful, mgr)
            if status != DONE:
                return status
            fresh[qd] = False
            cur[NOW] = 0
        else:
            return DONE


events = None  # where numba is not installed the reference engine runs these studies
if numba is not None:  # compiled; each finds the others' compiled twins among the globals
    for _fn in (_shape, _stages, _dispatch_batch, _finish, _events):
        globals()[_fn.__name__] = numba.njit(cache=True)(_fn)
    events = globals()["_events"]
