"""The fast engine: batch-level event loop for static policies and open-loop workloads.

Every request's exit is known up front (the policy is static), so a batch's whole schedule is
computed when it is dispatched; the loop touches batches, not requests, and per-request times
are filled in with NumPy at the end. It must agree with :mod:`offramp.sim.reference`.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right

import numpy as np

from .plan import Plan, RunRecords, number_batches


def supports(plan: Plan) -> str | None:
    """None if the fast engine can run this plan, else the reason it cannot."""
    if not plan.policy.is_static:
        return f"policy {plan.policy.name!r} is stateful"
    if plan.workload.kind == "closed":
        return "closed-loop workloads depend on completions"
    if plan.server.routing == "jsq":
        return "join-shortest-queue routing depends on server state"
    return None


def _serve_queue(plan: Plan, arr: list[float], exits: np.ndarray, servers: list[int],
                 out: list[list]) -> None:
    """Serve one FIFO queue (arrival times ``arr``) by ``servers``; append batch rows to ``out``.

    A free server takes the next batch at d = max(free, min(a[i+B-1], a[i] + max_wait)):
    when B requests are waiting or the oldest has waited max_wait, whichever is first.
    """
    svc, srv = plan.service, plan.server
    big_b, wait, mode = srv.max_batch, srv.max_wait_ms / 1000.0, srv.exit_mode
    k_exits = svc.n_exits
    n = len(arr)
    # reach[k][i]: how many of the first i requests reach exit k (exit index >= k).
    reach = [np.concatenate([[0], np.cumsum(exits >= k)]).tolist() for k in range(k_exits + 1)]
    base, sig, dist = svc.base, svc.sigma, svc.dist
    seg = [base[svc.seg(k)] for k in range(k_exits)]
    head = [base[svc.head(k)] for k in range(k_exits)]
    comp = [base[svc.compact(k)] for k in range(k_exits - 1)]
    over = base[0]
    local = dict.fromkeys(servers, 0)
    free = [(0.0, r) for r in servers]
    heapq.heapify(free)
    i = 0
    while i < n:
        f, r = heapq.heappop(free)
        close = arr[i] + wait
        if i + big_b - 1 < n and arr[i + big_b - 1] < close:
            close = arr[i + big_b - 1]
        d = f if f > close else close
        j = bisect_right(arr, d, i, min(i + big_b, n))
        size = j - i
        m = local[r]
        local[r] = m + 1
        z = plan.noise[r].row(m) if dist != "fixed" else None

        def dur(slot: int, table: list[float], b: int) -> float:
            if z is None:
                return table[b]
            if dist == "lognormal":
                return table[b] * math.exp(sig[slot][b] * z[slot])
            return table[b] * z[slot]

        ends = [0.0] * k_exits
        sizes = [0] * k_exits
        t = d + dur(0, over, size)
        if mode == "none":
            for k in range(k_exits):
                t += dur(1 + k, seg[k], size)
                sizes[k] = size
            t += dur(1 + 2 * k_exits - 1, head[-1], size)
            ends[-1] = t
        elif mode == "keep":
            last = max(k for k in range(k_exits) if reach[k][j] - reach[k][i] > 0)
            for k in range(last + 1):
                t += dur(1 + k, seg[k], size)
                t += dur(1 + k_exits + k, head[k], size)
                ends[k] = t
                sizes[k] = size
        else:
            cur = size
            for k in range(k_exits):
                t += dur(1 + k, seg[k], cur)
                t += dur(1 + k_exits + k, head[k], cur)
                ends[k] = t
                sizes[k] = cur
                left = reach[k + 1][j] - reach[k + 1][i]
                if left == 0:
                    break
                if left < cur:
                    t += dur(1 + 2 * k_exits + k, comp[k], left)
                    cur = left
        out.append([i, j, r, m, d, t, ends, sizes])
        heapq.heappush(free, (t, r))
        i = j


def run_fast(plan: Plan) -> RunRecords:
    """Simulate an open-loop plan with a static policy."""
    reason = supports(plan)
    if reason:
        raise ValueError(f"fast engine cannot run this study: {reason}")
    k_exits = plan.trace.n_exits
    arrivals, samples = plan.arrivals, plan.samples
    n = arrivals.size
    if plan.server.exit_mode == "none":
        exits = np.full(n, k_exits - 1, dtype=np.int64)
    else:
        exits = plan.policy.exit_index(plan.trace, samples).astype(np.int64)
    groups: list[tuple[np.ndarray, list[int]]] = []
    if plan.server.routing == "shared" or plan.server.replicas == 1:
        groups.append((np.arange(n), list(range(plan.server.replicas))))
    else:
        for r in range(plan.server.replicas):
            groups.append((np.flatnonzero(plan.routes == r), [r]))
    dispatch = np.empty(n)
    finish = np.empty(n)
    replica = np.empty(n, dtype=np.int64)
    local = np.empty(n, dtype=np.int64)
    rows: list[list] = []
    for idx, servers in groups:
        if idx.size == 0:
            continue
        start = len(rows)
        _serve_queue(plan, arrivals[idx].tolist(), exits[idx], servers, rows)
        part = rows[start:]
        # Batches take the queue in FIFO order, so they cover idx consecutively.
        which = np.repeat(np.arange(len(part)), [b[1] - b[0] for b in part])
        ends = np.array([b[6] for b in part])
        req = idx
        dispatch[req] = np.array([b[4] for b in part])[which]
        finish[req] = ends[which, exits[req]]
        replica[req] = np.array([b[2] for b in part])[which]
        local[req] = np.array([b[3] for b in part])[which]
    b_rep = np.array([b[2] for b in rows], dtype=np.int64)
    b_loc = np.array([b[3] for b in rows], dtype=np.int64)
    b_disp = np.array([b[4] for b in rows])
    order, gid = number_batches(replica, local, b_rep, b_loc, b_disp)
    return RunRecords(
        arrival=arrivals, sample=samples, dispatch=dispatch, finish=finish, exit=exits,
        replica=replica, batch=gid, batch_replica=b_rep[order], batch_dispatch=b_disp[order],
        batch_finish=np.array([b[5] for b in rows])[order],
        batch_sizes=np.array([b[7] for b in rows], dtype=np.int64).reshape(-1, k_exits)[order],
    )
