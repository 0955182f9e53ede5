"""The compiled event loop's queue side (:mod:`.fast_events`): when a queue's next batch would
go, where an arrival is routed, and the next arrival itself. Plain Python over arrays,
compiled by numba where it is installed.
"""

from __future__ import annotations

import math

from .fast_heap import pop as _pop
from .fast_kernels import numba

if numba is not None:  # the batching rule, compiled from its one home
    from .fast_kernels import _dispatch

# Routing codes and the loop's scalar state (``cur``): one int64 array, so the loop can stop
# and resume anywhere.
SHARED, ROUND_ROBIN, RANDOM, JSQ = range(4)
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


if numba is not None:  # compiled; each finds the others' compiled twins among the globals
    for _fn in (_candidate, _route, _arrive):
        globals()[_fn.__name__] = numba.njit(cache=True)(_fn)
