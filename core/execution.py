"""How a batch runs through its stages: the one execution rule of the serving loop.

Every place that needs to know what a batch costs asks this module: both simulator engines,
PAME's Inference Time Matrix, the per-sample exit costs of the other policies, the "full
batch" time of the demo and of the speed benchmark. Pure Python, standard library only (the
GPU-side serving loop imports it).

A batch of ``size`` requests is dispatched (``overhead``), then runs segment by segment.
After segment k, if the policy consults exit k (``active[k]``), the exit's ``head`` runs, the
serving loop takes the exit decision on the host (``check``: decide, mask to host, sync,
survivor indices back) and the samples that exit there leave; then, by exit mode:

- ``none``: no exit head but the last; the whole batch runs every segment.
- ``keep`` (Apparate): exited results return at once; the batch keeps running at its full
  ``size`` until nobody is left.
- ``shrink`` (PAME): exited samples leave and, if some do but not all, the survivors are
  gathered (``compact`` at the survivor count) and go on as a smaller batch.
- ``async`` (Gati's asynchronous lookups): the batch runs whole as in ``keep``, but an early
  exit's head and check run *aside*, on a lookup lane beside the backbone: the backbone goes
  on at once (handoff, the next segments) and waits for the lookup's decision only when it
  reaches the next consulted exit (the stage that waits has ``wait``). The exit's leavers
  finish when its check ends; a miss costs the backbone nothing unless its lookup outlasts the
  segments up to the next exit. If nobody goes on, the backbone learns it there and stops (the
  segments run meanwhile were speculative). :func:`timeline` is the lanes' arithmetic.

Wherever a batch goes on to the next segment whole (every boundary in ``none``, every one in
``keep``, and in ``shrink`` where nobody exited or the exit was not consulted) its activation is
handed on (``handoff`` at the boundary's exit index and the batch's run size). The last exit
takes no decision (everybody left leaves), so it has no ``check``. A batch stops at the first
exit that nobody goes on from.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from .modes import ExitMode, StageKind

OVERHEAD, SEGMENT, HEAD, CHECK, COMPACT, HANDOFF = StageKind


@dataclass(frozen=True, slots=True)
class Stage:
    """One timed piece of work: ``kind`` at exit/segment ``k`` on a batch of ``batch``."""

    kind: StageKind
    k: int
    batch: int
    aside: bool = False  # on the lookup lane beside the backbone (``async``; a head starts it)
    wait: bool = False   # the backbone waits for the lookup in flight before this stage


@dataclass(frozen=True, slots=True)
class Exit:
    """The head of exit ``k`` has run on ``batch`` samples: who leaves is decided now."""

    k: int
    batch: int


def run_size(mode: ExitMode, size: int, active: int) -> int:
    """Batch size a stage runs at with ``active`` of a dispatched ``size`` still going."""
    return size if mode.keeps_size else active


@lru_cache(maxsize=1 << 12)
def exit_step(mode: ExitMode, k: int, size: int, active: int, going_on: int) -> tuple[Stage, ...]:
    """What exit k costs after its decision: ``active`` reached it, ``going_on`` continue."""
    if going_on == 0:
        return ()
    if mode.compacts and going_on < active:
        return (Stage(COMPACT, k, going_on),)
    return (Stage(HANDOFF, k, run_size(mode, size, active)),)


def between_exits(mode: ExitMode, size: int, active: int, lo: int, hi: int) -> tuple[Stage, ...]:
    """Segments lo..hi and the head of exit hi, with ``active`` of a dispatched ``size`` going.

    The exits lo..hi-1 in between are not consulted (no head runs there; the batch is handed on
    whole at each of those boundaries).
    """
    run = run_size(mode, size, active)
    out: list[Stage] = []
    for k in range(lo, hi + 1):
        out.append(Stage(SEGMENT, k, run))
        if k < hi:
            out.append(Stage(HANDOFF, k, run))
    return tuple(out) + (Stage(HEAD, hi, run),)


@lru_cache(maxsize=1 << 14)
def reach_exit(mode: ExitMode, size: int, active: int, lo: int, hi: int,
               n_exits: int) -> tuple[Stage, ...]:
    """:func:`between_exits`, then exit hi's decision (``check``) unless hi is the last exit."""
    out = between_exits(mode, size, active, lo, hi)
    if hi < n_exits - 1:
        out += (Stage(CHECK, hi, run_size(mode, size, active)),)
    return out


def consulted(mode: ExitMode, active: Sequence[bool]) -> list[int]:
    """The exits whose heads run: those ``active`` (all but the last in ``none``), and the last."""
    last = len(active) - 1
    return [k for k in range(last) if active[k] and mode.consults_early_exits] + [last]


def batch_steps(mode: ExitMode | str, size: int, active: Sequence[bool]
                ) -> Generator[Stage | Exit, int, None]:
    """The rule as a generator of :class:`Stage` and :class:`Exit` items, in order.

    After an ``Exit`` the caller sends how many samples go on (0 at the last exit); after a
    ``Stage`` it sends nothing. ``active[k]``: whether exit k's head runs (the last always).
    """
    mode = ExitMode.parse(mode)
    if mode.lookups_aside:
        yield from _lookups_aside(mode, size, active)
        return
    yield Stage(OVERHEAD, 0, size)
    cur, prev, last = size, -1, len(active) - 1
    for e in consulted(mode, active):
        yield from reach_exit(mode, size, cur, prev + 1, e, last + 1)
        left = yield Exit(e, run_size(mode, size, cur))
        if not left:
            return
        yield from exit_step(mode, e, size, cur, left)
        cur, prev = left, e


def _lookups_aside(mode: ExitMode, size: int, active: Sequence[bool]
                   ) -> Generator[Stage | Exit, int, None]:
    """:func:`batch_steps` for ``async``: the whole batch runs every segment it reaches; each
    early lookup runs aside and is waited for at the next consulted exit."""
    yield Stage(OVERHEAD, 0, size)
    prev, last, in_flight, going = -1, len(active) - 1, False, size
    for e in consulted(mode, active):
        for k in range(prev + 1, e + 1):
            yield Stage(SEGMENT, k, size)
            if k < e:
                yield Stage(HANDOFF, k, size)
        if in_flight and not going:
            return  # the lookup said nobody goes on: the batch ends once it is waited for
        if e == last:
            yield Stage(HEAD, e, size, wait=in_flight)
            yield Exit(e, size)
            return
        yield Stage(HEAD, e, size, aside=True, wait=in_flight)
        yield Stage(CHECK, e, size, aside=True)
        going = yield Exit(e, size)
        yield Stage(HANDOFF, e, size)
        prev, in_flight = e, True


def timeline(plan: BatchPlan, durations: Sequence[float]) -> tuple[float, list[float]]:
    """When a batch's work ends and when each exit's leavers finish (NaN where nobody leaves),
    from each stage's duration, from 0: the backbone's clock ``t`` and the lookup lane's ``s``.
    An aside head starts a lookup at ``t`` (``s = t``), aside stages add to ``s``, the others to
    ``t``; a stage that waits first sets ``t = max(t, s)``; the batch ends at ``max(t, s)``.
    Without aside stages this is the sum in order. The simulator's engines add the same way."""
    marks = {e - 1: k for k, e in enumerate(plan.ends) if e >= 0}
    leave = [float("nan")] * len(plan.ends)
    t = s = 0.0
    for i, (st, dt) in enumerate(zip(plan.stages, durations, strict=True)):
        if st.wait:
            t = max(t, s)
        if st.aside:
            s = (t if st.kind is HEAD else s) + dt
        else:
            t += dt
        if i in marks:
            leave[marks[i]] = s if st.aside else t
    return max(t, s), leave


WAITS, ASIDE, STARTS = 1, 2, 4  # a stage's lane as the compiled loops read it (bit flags)


def lane_code(st: Stage) -> int:
    """``st``'s lane as bit flags: WAITS (``t = max(t, s)`` first), ASIDE (adds to ``s``) and
    STARTS (an aside head: ``s = t`` first) — :func:`timeline`'s rule, for the engines' loops."""
    return ((WAITS if st.wait else 0) | (ASIDE if st.aside else 0)
            | (STARTS if st.aside and st.kind is HEAD else 0))


@dataclass(frozen=True)
class BatchPlan:
    """A batch's whole schedule once its survivor counts are known.

    ``ends[k]``: how many stages have run when the samples leaving at exit k finish (-1 where
    the batch never decides at exit k).
    """

    stages: tuple[Stage, ...]
    ends: tuple[int, ...]


def batch_plan(mode: ExitMode | str, size: int, going_on: tuple[int, ...],
               active: tuple[bool, ...]) -> BatchPlan:
    """The schedule of a batch of ``size`` where ``going_on[k]`` samples continue past exit k.

    ``going_on`` has one entry per early exit (K-1); it is ignored for exit mode ``none``.
    Cached: a run reuses the few distinct schedules its batches have.
    """
    mode = mode if isinstance(mode, ExitMode) else ExitMode.parse(mode)
    return _batch_plan(mode, size, tuple(going_on), tuple(active))


@lru_cache(maxsize=1 << 16)
def _batch_plan(mode: ExitMode, size: int, going_on: tuple[int, ...], active: tuple[bool, ...]
                ) -> BatchPlan:
    stages: list[Stage] = []
    ends = [-1] * len(active)
    last = len(active) - 1 if mode.consults_early_exits else 0  # exits below it may go on
    steps = batch_steps(mode, size, active)
    item = next(steps)
    try:
        while True:
            if isinstance(item, Exit):
                ends[item.k] = len(stages)
                left = going_on[item.k] if item.k < last else 0
                item = steps.send(left)
            else:
                stages.append(item)
                item = next(steps)
    except StopIteration:
        pass
    return BatchPlan(tuple(stages), tuple(ends))


def all_exit_at(mode: ExitMode | str, size: int, k: int, n_exits: int) -> BatchPlan:
    """A batch of ``size`` that all leaves at exit k, every head up to k consulted."""
    going = tuple(size if j < k else 0 for j in range(n_exits - 1))
    return batch_plan(mode, size, going, (True,) * n_exits)


def no_exit(size: int, n_exits: int) -> BatchPlan:
    """A batch of ``size`` through the whole model with no early exit (mode ``none``)."""
    return batch_plan(ExitMode.NONE, size, (), (True,) * n_exits)
