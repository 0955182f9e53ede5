"""The ``rebatch`` rule (E3, DREX): where a replica's work is cut into stages, what each stage
batch runs, when a stage may run and which ready stage runs next. The simulator's reference
engine (:mod:`offramp.sim.rebatch`) and the real serving loop
(:mod:`offramp.profiling.rebatch_loop`) both ask this module. Standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .execution import Stage, between_exits, consulted, reach_exit
from .modes import Discipline, ExitMode, StageKind


@dataclass(frozen=True)
class Layout:
    """Where the stages end (``ends``: a segment index), whether each ends with a consulted
    exit (``exits``; else at a pipeline boundary), and each stage's pipeline group."""

    ends: tuple[int, ...]
    exits: tuple[bool, ...]
    group: tuple[int, ...]  # the pipeline group of each stage (0 without a pipeline)


def cut(active: Sequence[bool], groups: Sequence[Sequence[int]] | None = None) -> Layout:
    """The stages of a model whose exits ``active`` are consulted, cut at those exits and at
    the last segment of each pipeline group (``groups``: segment indices; None: one group).
    The groups must end at the last segment."""
    n = len(active)
    heads = consulted(ExitMode.REBATCH, list(active))
    groups = [list(range(n))] if groups is None else [list(g) for g in groups]
    ends = sorted(set(heads) | {g[-1] for g in groups})
    of = {k: i for i, g in enumerate(groups) for k in g}
    return Layout(tuple(ends), tuple(e in heads for e in ends), tuple(of[e] for e in ends))


def stage_steps(plan: Layout, j: int, b: int, intact: bool, n_exits: int) -> list[Stage]:
    """Stage j's work on a batch of b: the dispatch overhead (stage 0) or the gather of its
    survivors (``handoff`` where it is one earlier batch intact), then its segments, with the
    head and decision of its exit where it ends at one."""
    lo, hi = (plan.ends[j - 1] + 1 if j else 0), plan.ends[j]
    first = (Stage(StageKind.OVERHEAD, 0, b) if j == 0
             else Stage(StageKind.HANDOFF if intact else StageKind.COMPACT, plan.ends[j - 1], b))
    body = (reach_exit(ExitMode.REBATCH, b, b, lo, hi, n_exits) if plan.exits[j]
            else between_exits(ExitMode.REBATCH, b, b, lo, hi)[:-1])
    return [first, *body]


def stage_ready(waiting: int, first_since: float, now: float, max_batch: int,
                stage_wait_s: float, upstream: bool) -> bool:
    """Whether stage j >= 1 may run: ``max_batch`` survivors wait, the first of them has
    waited ``stage_wait_s``, or nothing upstream could still join them."""
    return waiting > 0 and (waiting >= max_batch or now >= first_since + stage_wait_s
                            or not upstream)


def pick(ready: Sequence[tuple[int, float, int]], discipline: Discipline) -> int:
    """The stage the discipline runs among the ready ones, each (stage, since when its first
    sample waits, how many wait); ties go deeper."""
    if discipline is Discipline.OLDEST_FIRST:
        return min(ready, key=lambda x: (x[1], -x[0]))[0]
    if discipline is Discipline.FULLEST_FIRST:
        return max(ready, key=lambda x: (x[2], x[0]))[0]
    return max(x[0] for x in ready)
