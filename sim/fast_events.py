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
from .fast_kernels import NEED_NOISE, NEED_PLAN, numba
from .service import ROWS_PER_CHUNK

if numba is not None:  # the batching rule and the wake-up, compiled from their one home
    from .fast_kernels import _bisect_right as _bisect
    from .fast_kernels import _dispatch, _slot_of, _wake_s

DONE, NEED_ROOM, NEED_HEAP = 0, 3, 4
SHARED, ROUND_ROBIN, RANDOM, JSQ = range(4)
# Scalars of the loop's state, kept in one int64 array so it can stop and resume anywhere.
J, OPEN, NB, THINK, SEQ, RR, N_FIN, N_CLI, N_MEM, NOW = range(10)


def _candidate(q, arr_t, nxt, head, count, queue_of, free_t, buf, big_b, wait, end):
    """(dispatch time, server, how many go) of queue ``q``'s next batch if no request joins
    first ((inf, -1, 0): empty)."""
    if count[q] == 0:
        return math.inf, -1, 0
    s = -1  # the free server: least (free time, replica), as the shared queue takes it
    for r in range(queue_of.size):
        if queue_of[r] == q and (s < 0 or free_t[r] < free_t[s]):
            s = r
    c = min(count[q], big_b)
    x = head[q]
    for u in range(c):
        buf[u] = arr_t[x]
        x = nxt[x]
    d, take = _dispatch(buf[:c], 0, free_t[s], big_b, wait, end)
    return d, s, take


def _route(j, t, arr_t, nxt, head, tail, count, outstanding, routes, routing, cur):
    """Queue request ``j`` (arrived at ``t``) where the routing sends it; returns the queue."""
    if routing == SHARED:
        q = 0
    elif routing == ROUND_ROBIN:
        q = cur[RR]
        cur[RR] = (q + 1) % outstanding.size
    elif routing == RANDOM:
        q = routes[j]
    else:
        q = 0
        for r in range(1, outstanding.size):
            if outstanding[r] < outstanding[q]:
                q = r
    arr_t[j], nxt[j] = t, -1
    if count[q] == 0:
        head[q] = j
    else:
        nxt[tail[q]] = j
    tail[q] = j
    count[q] += 1
    if routing != SHARED:
        outstanding[q] += 1
    return q


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
            acc):
    """Run batch row ``pid``'s schedule on replica ``r`` (its ``m``-th batch) from ``d``
    (free since ``f``): base · exp(σ·z) · slowdown · loop factor per stage, in the batch
    loop's order; fills ``ends`` and ``snap``; returns when the replica is free. The batch
    loop (``fast_kernels._loop``) has these lines inline: calling this, M/M/1 ran 41% slower
    (2.85M vs 4.87M customers/s, benchmarks/mm1_peers.py, 2026-12-06)."""
    base, sigma, noise, _chunk_of, slow_at, slow_x, wake, grid, edges, state_f, tail = svc
    _keys, _ids, p_n, p_slot, p_batch, p_leave, p_kind, _sizes = plans
    o = 0 if fixed else (m % ROWS_PER_CHUNK) * width
    x = slow_x[r, _bisect(slow_at[r], d, 0, slow_at.shape[1]) - 1]
    w = 0.0 if wake.shape[1] == 0 else _wake_s(wake[size], grid, d - f)
    t = d if wake.shape[1] == 0 else d + w
    fac = state_f[_bisect(edges, d - f, 0, edges.size)]
    ends[:] = np.nan
    if breakdown:
        acc[:] = 0.0
        acc[overhead] = w
    for st in range(p_n[pid]):
        slot, b = p_slot[pid, st], p_batch[pid, st]
        dt = base[slot, b] * math.exp(sigma[slot, b] * noise[r, o + slot]) * x * fac[slot]
        t += dt
        leave = p_leave[pid, st]
        if breakdown:
            acc[p_kind[pid, st]] += dt
        if leave >= 0:
            ends[leave] = t
            if breakdown:
                snap[leave, :] = acc
    if tail.size:
        t += tail[size]
    return t


def _dispatch_batch(q, s, d, take, cur, aux, reqs, queues, svc, plans, out, fin_t, fin_i,
                    k_exits, consults, big_b, fixed, width, breakdown, overhead, ends, snap,
                    acc):
    """Serve queue ``q``'s next ``take`` requests on replica ``s`` from ``d``; schedules the
    finish of each exit its leavers leave at. Returns DONE, or what it needs first (and then
    changes nothing)."""
    arr_t, ex, nxt, _client, q_disp, q_fin, q_batch, members, parts = reqs
    head, _tail, count, _queue_of, _outstanding, free_t, local = queues
    o_size, o_rep, o_local, o_disp, o_fin, o_sizes, b_start = out
    if cur[N_FIN] + k_exits > fin_t.size:  # no room for this batch's finishes
        return NEED_HEAP
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
    t = _stages(pid, s, m, d, free_t[s], take, svc, plans, fixed, width, breakdown, overhead,
                ends, snap, acc)
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
            batcher):
    """The leavers of the earliest finishing exit: each lowers its replica's outstanding
    count and, in a closed loop, starts its client's think time (in batch order).

    A replica with a batcher of its own (``batcher``: not a shared queue) that is free as its
    last leavers leave looks at its queue at once, before those leavers' clients are back:
    ``cur[NOW]`` names that queue (plus one) for the loop to dispatch first if it is due."""
    _arr, ex, _nxt, client_of, _d, _f, _b, members, _parts = reqs
    outstanding = queues[4]
    o_rep, b_start = out[1], out[6]
    t, b, k = fin_t[0], fin_i[0, 1], fin_i[0, 2]
    cur[N_FIN] = _pop(fin_t, fin_i, cur[N_FIN])
    if batcher and t == queues[5][o_rep[b]]:
        cur[NOW] = queues[3][o_rep[b]] + 1
    for u in range(b_start[b], b_start[b + 1]):
        x = members[u]
        if ex[x] != k:
            continue
        if routing != SHARED:
            outstanding[o_rep[b]] -= 1
        if client_of[x] >= 0:
            w = t
            if think_on:
                w = t + thinks[cur[THINK]]
                cur[THINK] += 1
            cur[N_CLI] = _push(cli_t, cli_i, cur[N_CLI], w, cur[SEQ], client_of[x], 0)
            cur[SEQ] += 1


def _arrive(t_a, cur, reqs, queues, cli_t, cli_i, routes, routing, n_open, cap, max_req,
            duration):
    """The next arrival: an open-loop request, or a client whose think time ended (it stops
    at ``max_req`` requests or at ``duration``). Returns the queue it joined, -1 where the
    client stopped, or -2 (nothing changed) where there is no room for it."""
    arr_t, nxt, client_of = reqs[0], reqs[2], reqs[3]
    head, tail, count, outstanding = queues[0], queues[1], queues[2], queues[4]
    if n_open >= 0:
        j = cur[OPEN]
        cur[OPEN] = j + 1
    else:
        j = cur[J]
        if (max_req >= 0 and j >= max_req) or t_a >= duration:
            cur[N_CLI] = _pop(cli_t, cli_i, cur[N_CLI])
            return -1
        if j == cap:
            return -2
        client_of[j] = cli_i[0, 1]
        cur[N_CLI] = _pop(cli_t, cli_i, cur[N_CLI])
    cur[J] = j + 1
    return _route(j, t_a, arr_t, nxt, head, tail, count, outstanding, routes, routing, cur)


def _events(reqs, queues, svc, plans, out, fin_t, fin_i, cli_t, cli_i, thinks, routes, cur,
            aux, n_open, cap, routing, big_b, wait, end, k_exits, consults, fixed, width,
            breakdown, overhead, think_on, max_req, duration, batcher, scratch, d_q, s_q,
            take_q, fresh):
    """The event loop (see the module docstring); returns DONE or what it needs (as the batch
    loop does, plus NEED_ROOM for more requests, NEED_HEAP for more pending finishes)."""
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
            _finish(cur, reqs, queues, out, fin_t, fin_i, cli_t, cli_i, thinks, think_on,
                    routing, batcher)
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
                                     fixed, width, breakdown, overhead, ends, snap, acc)
            if status != DONE:
                return status
            fresh[qd] = False
            cur[NOW] = 0
        else:
            return DONE


events = None  # where numba is not installed the reference engine runs these studies
if numba is not None:  # compiled; each finds the others' compiled twins among the globals
    for _fn in (_candidate, _route, _shape, _stages, _dispatch_batch, _finish, _arrive,
                _events):
        globals()[_fn.__name__] = numba.njit(cache=True)(_fn)
    events = globals()["_events"]
