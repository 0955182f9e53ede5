"""Dynamic-OFA's runtime manager as plain functions over arrays: the one home of its rule.

:class:`offramp.policies.dynamic_ofa.ManagerRun` (the reference engine, the real loop) calls
them in Python; the fast engine's event loop compiles the same functions with numba
(:mod:`offramp.sim.fast_manager`). The rule itself is described in
:mod:`offramp.policies.dynamic_ofa`.

State, in arrays so that compiled code can change it in place:

- ``st`` (int64): the current level, finished requests and dispatched batches since the last
  switch, whether the last switch was a rise, the window's first and end rows in ``win_c`` /
  ``win_l``, the number of switches in ``hist_t`` / ``hist_l``;
- ``sf`` (float64): when the last switch happened, the last observation's time, the lock's end;
- ``pi`` / ``pf``: the fitted settings (unit, levels, lock, trim; window, warm-up, up_after,
  targets, switch cost, hold);
- ``win_c`` / ``win_l``: the window's (clock, latency ms) rows ``st[LO]:st[HI]``;
- ``hist_t`` / ``hist_l``: (time s, level) of every switch, the first ``st[N_HIST]`` rows;
- ``active`` / ``loaded``: per replica, the level its running batch uses and the one it holds.

Every function leaves room checks to the caller (:func:`room`): a call appends at most one
window row and one switch.
"""

from __future__ import annotations

import math

import numpy as np

# st
LEVEL, REQUESTS, BATCHES, ROSE, LO, HI, N_HIST = range(7)
# sf
SWITCHED, NOW, LOCKED = range(3)
# pi
UNIT, N_LEVELS, LOCK, TRIM = range(4)
# pf
WINDOW, WARMUP, UP_AFTER, TARGET, ACC_TARGET, SWITCH_S, HOLD_S = range(7)
# units (pi[UNIT])
BY_REQUESTS, BY_BATCHES, BY_SECONDS = range(3)


def pairwise_sum(x):
    """The sum of ``x`` as NumPy's ``add.reduce`` takes it (pairwise, 8 accumulators in
    blocks of up to 128), so a mean here equals ``x.mean()`` to the last bit."""
    n = x.size
    if n < 8:
        res = 0.0
        for i in range(n):
            res += x[i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = x[0], x[1], x[2], x[3]
        r4, r5, r6, r7 = x[4], x[5], x[6], x[7]
        i = 8
        while i < n - (n % 8):
            r0 += x[i]
            r1 += x[i + 1]
            r2 += x[i + 2]
            r3 += x[i + 3]
            r4 += x[i + 4]
            r5 += x[i + 5]
            r6 += x[i + 6]
            r7 += x[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += x[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sum(x[:n2]) + pairwise_sum(x[n2:])


def since(st, sf, pi, now_s):
    """The manager's clock: its unit counted since the last switch."""
    if pi[UNIT] == BY_REQUESTS:
        return float(st[REQUESTS])
    if pi[UNIT] == BY_BATCHES:
        return float(st[BATCHES])
    return now_s - sf[SWITCHED]


def window_mean(st, sf, pi, pf, win_c, win_l, now_s):
    """Mean of the window without its ``trim`` largest and smallest latencies (NaN until the
    window is full); a window counted in batches or seconds first drops what it has left."""
    window = pf[WINDOW]
    if pi[UNIT] == BY_REQUESTS:
        full = st[HI] - st[LO] >= window
    else:
        clock = since(st, sf, pi, now_s)
        while st[LO] < st[HI] and win_c[st[LO]] <= clock - window:
            st[LO] += 1
        full = clock - pf[WARMUP] >= window
    size = st[HI] - st[LO]
    if not full or size == 0:
        return math.nan
    x = np.sort(win_l[st[LO]:st[HI]])
    n = int(window) if pi[UNIT] == BY_REQUESTS else size
    trim = pi[TRIM] if pi[TRIM] >= 0 else (max(1, n // 10) if n >= 3 else 0)
    if 0 < trim and 2 * trim < size:
        x = x[trim:size - trim]
    return pairwise_sum(x) / x.size


def begin_batch(st, pf, active, loaded, replica):
    """A batch starts on ``replica``: it decides at the current level; returns the seconds the
    replica stalls first (the switch cost where it held another level)."""
    st[BATCHES] += 1
    active[replica] = st[LEVEL]
    if loaded[replica] != st[LEVEL]:
        loaded[replica] = st[LEVEL]
        return pf[SWITCH_S]
    return 0.0


def observe(st, sf, pi, pf, level_acc, win_c, win_l, hist_t, hist_l, now_s, latency_ms):
    """One request finished ``latency_ms`` after it arrived, at ``now_s``: the window takes it
    and the manager goes down (full window over target) or up (within target, level below the
    accuracy target, seen ``up_after``, not locked) one level."""
    st[REQUESTS] += 1
    sf[NOW] = now_s
    clock = since(st, sf, pi, now_s)
    if st[ROSE] and clock > pf[WARMUP] + 2 * pf[WINDOW]:
        st[ROSE] = 0
    if clock <= pf[WARMUP]:
        return
    if pi[UNIT] == BY_REQUESTS and st[HI] - st[LO] >= pf[WINDOW]:
        st[LO] += 1  # the oldest leaves a window counted in requests
    if st[HI] == win_c.size:  # at the end of its rows: move the window to the front
        size = st[HI] - st[LO]
        win_c[:size] = win_c[st[LO]:st[HI]].copy()
        win_l[:size] = win_l[st[LO]:st[HI]].copy()
        st[LO], st[HI] = 0, size
    win_c[st[HI]], win_l[st[HI]] = clock, latency_ms
    st[HI] += 1
    mean = window_mean(st, sf, pi, pf, win_c, win_l, now_s)
    if math.isnan(mean):
        return
    level = st[LEVEL]
    if mean > pf[TARGET]:
        if level > 0:
            if pi[LOCK] and st[ROSE]:
                sf[LOCKED] = now_s + pf[HOLD_S]
            _switch(st, sf, hist_t, hist_l, level - 1, now_s, 0)
        return
    if (level < pi[N_LEVELS] - 1 and clock >= pf[UP_AFTER]
            and level_acc[level] < pf[ACC_TARGET] and now_s >= sf[LOCKED]):
        _switch(st, sf, hist_t, hist_l, level + 1, now_s, 1)


def _switch(st, sf, hist_t, hist_l, level, now_s, rose):
    st[LEVEL] = level
    hist_t[st[N_HIST]], hist_l[st[N_HIST]] = now_s, level
    st[N_HIST] += 1
    st[LO] = st[HI] = 0
    st[REQUESTS] = st[BATCHES] = 0
    sf[SWITCHED] = now_s
    st[ROSE] = rose


def room(st, win_c, hist_t, more):
    """Whether ``more`` observations fit: window rows (after moving it to the front) and
    switches."""
    return st[HI] - st[LO] + more <= win_c.size and st[N_HIST] + more <= hist_t.size
