"""A batch's schedule as the fast engine runs it: the execution rule's plan compiled into
timed steps once per batch shape (:func:`compile_plan`), and how their times add up
(:func:`run_steps`, the Python loop; ``fast_kernels`` and ``fast_events`` run the same rule
compiled)."""

from __future__ import annotations

from math import exp
from typing import Any

from offramp.core.execution import ASIDE, STARTS, WAITS, batch_plan, lane_code
from offramp.core.modes import ExitMode, StageKind

from .records import N_KINDS
from .service import ServiceTimes

_OVERHEAD, _CHECK = StageKind.OVERHEAD.code, StageKind.CHECK.code


def compile_plan(svc: ServiceTimes, mode: ExitMode, active: tuple[bool, ...], size: int,
                  going: tuple[int, ...]) -> tuple[list[list], list[int]]:
    """(timed steps, stage sizes) of a batch of ``size`` with ``going`` survivors past each
    consulted exit: each step is [table, sigmas, noise slot, batch size, the exit whose leavers
    finish when it ends or -1, the stage kind's code, its lane: core.execution.lane_code]."""
    bp = batch_plan(mode, size, going, active)
    done_at = {e - 1: k for k, e in enumerate(bp.ends) if e >= 0}  # plan stage -> exit
    steps, sizes, pending, idle = [], [0] * svc.n_exits, [], None
    kinds = svc.kind_rows
    for s_i, st in enumerate(bp.stages):
        row = kinds[st.kind]
        if row is not None:
            slot = row[0] + st.k
            step = [svc.base[slot], svc.sigma[slot], slot, st.batch, -1, row[1],
                    lane_code(st) if st.aside or st.wait else 0]
            # A stage of no time adds exactly 0.0 (to the clock and to its kind): left out,
            # unless it is the first, is on a lane of its own (async), or an exit must end
            # with it (below).
            if steps and svc.base[slot][st.batch] == 0.0 and not step[6]:
                idle = step
            else:
                steps.append(step)
                idle = None
        if s_i in done_at:
            pending.append(done_at[s_i])
        if pending and steps:
            for k in pending:  # an exit ends with the last timed stage before it ...
                if steps[-1][4] >= 0:  # ... which ends another: with the no-time stage after
                    steps.append(idle)
                    idle = None
                steps[-1][4] = k
            pending = []
        if st.kind is StageKind.SEGMENT:
            sizes[st.k] = st.batch
    return steps, sizes


def run_steps(steps: list[list], z: Any, o: int, x: float, fac: Any, t: float, k_exits: int,
               wake: float, parts: list[float] | None) -> tuple[float, list[float]]:
    """Add each stage's time, base * exp(sigma * z) * slowdown * loop-state factor, in the
    reference engine's order (same floating-point timestamps), on its lane
    (core.execution.timeline: an aside lookup adds to its own clock ``s``); returns the finish
    time and when each exit's leavers finish. With ``parts`` (zeros, exit-major, ``N_KINDS``
    each), also each exit's leavers' time by stage kind (the wake-up counts as overhead, a
    wait for a lookup as check)."""
    _exp = exp
    ends = [0.0] * k_exits
    s = t
    if parts is None:  # the hot path of searches: no breakdown
        for tb, ts, zi, b, leave, _, lane in steps:
            dt = tb[b] * _exp(ts[b] * z[o + zi]) * x * fac[zi]
            if lane:
                if lane & WAITS and s > t:
                    t = s
                if lane & ASIDE:
                    s = (t if lane & STARTS else s) + dt
                    if leave >= 0:
                        ends[leave] = s
                    continue
            t += dt
            if leave >= 0:
                ends[leave] = t
        return (s if s > t else t), ends
    acc = [0.0] * N_KINDS
    acc[_OVERHEAD] = wake
    side = acc
    for tb, ts, zi, b, leave, kc, lane in steps:
        dt = tb[b] * _exp(ts[b] * z[o + zi]) * x * fac[zi]  # the same time as above, kept
        if lane & WAITS and s > t:
            acc[_CHECK] += s - t
            t = s
        if lane & ASIDE:
            if lane & STARTS:
                s, side = t, acc.copy()
            s += dt
            side[kc] += dt
            if leave >= 0:
                ends[leave] = s
                parts[leave * N_KINDS:(leave + 1) * N_KINDS] = side
            continue
        t += dt
        acc[kc] += dt
        if leave >= 0:
            ends[leave] = t
            parts[leave * N_KINDS:(leave + 1) * N_KINDS] = acc
    return (s if s > t else t), ends
