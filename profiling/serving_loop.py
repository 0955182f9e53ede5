"""The real serving loop: one batch through a multi-exit model, stage by stage, each stage timed.

The loop runs exactly the stages the execution rule (:mod:`offramp.core.execution`) gives for
its exit mode: the batch is assembled from single requests and placed on the device
(``overhead``), segments and exit heads run, each consulted early exit takes its decision on the
host (``check``: max softmax vs the exit's threshold, mask to the host, survivor indices back to
the device), survivors are gathered (``compact``) or the batch is handed on whole (``handoff``).
The profiler measures the loop's own stages here, where they happen; ``offramp validate`` serves
with it. torch, numpy and the standard library only (runs on a bare CUDA box).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from offramp.core.execution import Exit, Stage, batch_steps
from offramp.core.modes import Discipline, ExitMode, StageKind

from .backends.torch_common import gather


def stack(inputs: Sequence[Any]) -> Any:
    """One batch from single-request inputs (tensors, or tuples of tensors), on the host."""
    first = inputs[0]
    if isinstance(first, Tensor):
        return torch.cat(list(inputs), dim=0)
    return tuple(torch.cat([x[i] for x in inputs], dim=0) for i in range(len(first)))


def place(x: Any, device: str, dtype: torch.dtype) -> Any:
    if isinstance(x, Tensor):
        x = x.to(device, non_blocking=True)
        return x.to(dtype) if x.is_floating_point() else x
    return tuple(place(t, device, dtype) for t in x)


class StageClock:
    """Elapsed time of each stage: ``perf_counter_ns`` on the CPU, CUDA events on a GPU."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter_ns())

    def elapsed_ms(self) -> list[float]:
        """Milliseconds between consecutive marks (synchronises the GPU once)."""
        if self.cuda:
            self.marks[-1].synchronize()
            return [float(a.elapsed_time(b)) for a, b in zip(self.marks[:-1], self.marks[1:], strict=True)]
        return [(b - a) / 1e6 for a, b in zip(self.marks[:-1], self.marks[1:], strict=True)]


@dataclass
class BatchRun:
    """One served batch: each sample's exit and predicted class, every stage with its time (ms)."""

    exits: list[int]
    stages: list[tuple[Stage, float]]
    preds: list[int]


RULES = ("maxprob", "entropy", "table")


@dataclass
class Pass:
    """One batch's state through the loop's stages: its single-request inputs and sample
    ids; per request its exit and prediction (-1: not yet); per row of the current
    activation the request it belongs to (``alive``); the activation, the last head's logits
    and the rows going on after the last decision (``keep``)."""

    requests: Sequence[Any]
    samples: list[int]
    exits: list[int] = field(init=False)
    preds: list[int] = field(init=False)
    alive: list[int] = field(init=False)
    act: Any = None
    logits: Tensor | None = None
    keep: Tensor | None = None

    def __post_init__(self) -> None:
        n = len(self.samples)
        self.exits, self.preds, self.alive = [-1] * n, [-1] * n, list(range(n))


class ServingLoop:
    """Serve batches of a model with ``segments`` and ``heads`` (``nn.ModuleList``s).

    The exit decision at early exit k, on the head's real output: ``rule`` ``maxprob`` (exit
    when the max softmax >= ``thresholds[k]``; ``inf``: never), ``entropy`` (exit when the
    normalised entropy H / log C <= ``thresholds[k]``) or ``table`` (exit where ``table[sample
    id]`` says: a saved policy's per-sample exits). ``active[k]``: whether exit k is consulted.
    ``handoff(k, act)`` passes a whole batch's activation to segment k+1 (identity in eager
    PyTorch; a copy into the next graph's static input for CUDA graphs). In mode ``rebatch``
    streams are served by :mod:`.rebatch_loop` with ``discipline`` and ``stage_wait_ms``.
    """

    def __init__(self, model: nn.Module, device: str, dtype: torch.dtype, mode: ExitMode | str,
                 thresholds: Sequence[float], active: Sequence[bool] | None = None,
                 handoff: Callable[[int, Any], Any] | None = None, rule: str = "maxprob",
                 table: Sequence[int] | None = None,
                 discipline: Discipline | str = Discipline.DEEPEST_FIRST,
                 stage_wait_ms: float | None = None):
        if rule not in RULES:
            raise ValueError(f"rule {rule!r} is not one of {RULES}")
        if rule == "table" and table is None:
            raise ValueError("rule 'table' needs the per-sample exit table")
        self.segments, self.heads = model.segments, model.heads
        self.k_exits = len(self.segments)
        self.device, self.dtype, self.mode = device, dtype, ExitMode.parse(mode)
        if not self.mode.real_loop_serves:
            raise ValueError(f"exit mode {self.mode} overlaps a lookup with the backbone; this "
                             "loop runs one stage at a time (serve keep)")
        self.thresholds = [float(t) for t in thresholds]
        self.rule, self.table = rule, (list(table) if table is not None else None)
        self.active = list(active) if active is not None else [True] * self.k_exits
        self.handoff = handoff or (lambda k, act: act)
        # rebatch (profiling/rebatch_loop.py): which ready stage runs next, and how long
        # survivors wait for a fuller batch (None: max_wait_ms)
        self.discipline, self.stage_wait_ms = Discipline(discipline), stage_wait_ms

    @torch.inference_mode()
    def run(self, requests: Sequence[Any], samples: Sequence[int] | None = None) -> BatchRun:
        """Serve one batch of single-request inputs (``samples``: their sample ids, for the
        ``table`` rule); every stage is timed."""
        clock = StageClock(self.device)
        clock.mark()  # from here: the loop's own setup of the batch counts as its overhead
        size = len(requests)
        p = Pass(requests, list(samples) if samples is not None else [-1] * size)
        done: list[Stage] = []
        steps = batch_steps(self.mode, size, self.active)
        item = next(steps)
        while True:
            if isinstance(item, Exit):
                going = self.last_exit(item.k, p) if item.k == self.k_exits - 1 else \
                    int(p.keep.numel())
                try:
                    item = steps.send(going)
                except StopIteration:
                    break
                continue
            self.step(item, p)
            clock.mark()
            done.append(item)
            item = next(steps, None)
            if item is None:
                break
        return BatchRun(p.exits, list(zip(done, clock.elapsed_ms(), strict=True)), p.preds)

    def step(self, st: Stage, p: Pass) -> None:
        """Run one stage of the execution rule on a batch's state ``p`` (untimed here)."""
        kind = st.kind
        if kind is StageKind.OVERHEAD:
            p.act = place(stack(p.requests), self.device, self.dtype)
        elif kind is StageKind.SEGMENT:
            p.act = self.segments[st.k](p.act)
        elif kind is StageKind.HEAD:
            p.logits = self.heads[st.k](p.act)
        elif kind is StageKind.CHECK:
            p.keep = self._decide(st.k, p)
        elif kind is StageKind.COMPACT:
            p.act = gather(p.act, p.keep)
            p.alive = [p.alive[i] for i in p.keep.tolist()]
            p.keep = torch.arange(len(p.alive), device=self.device)
        elif kind is StageKind.HANDOFF:
            p.act = self.handoff(st.k, p.act)

    def last_exit(self, k: int, p: Pass) -> int:
        """Everybody still in the batch leaves at the last exit ``k``; returns 0 (going on)."""
        pred = p.logits.argmax(dim=-1).tolist()
        for i, r in enumerate(p.alive):
            if p.exits[r] < 0:
                p.exits[r], p.preds[r] = k, pred[i]
        return 0

    def _leaving(self, k: int, p: Pass) -> Tensor:
        """(rows,) bool on the host: which rows of the batch the rule lets exit at k."""
        if self.rule == "table":
            return torch.tensor([self.table[p.samples[r]] == k for r in p.alive], dtype=torch.bool)
        prob = torch.softmax(p.logits.float(), dim=-1)
        if self.rule == "maxprob":
            return (prob.amax(dim=-1) >= self.thresholds[k]).cpu()
        ent = -(prob.double() * torch.log(prob.double().clamp_min(1e-12))).sum(dim=-1) / \
            math.log(prob.shape[-1])
        return (ent.clamp(0.0, 1.0).float() <= self.thresholds[k]).cpu()

    def _decide(self, k: int, p: Pass) -> Tensor:
        """Exit decision at early exit k: rows (of the current batch) of those going on."""
        leave = self._leaving(k, p)
        pred = p.logits.argmax(dim=-1).cpu()
        if self.mode.keeps_size:
            # The batch keeps every row; rows that left earlier are neither counted nor re-exited.
            gone = torch.tensor([p.exits[r] >= 0 for r in p.alive], dtype=torch.bool)
            leave &= ~gone
            for i in torch.nonzero(leave).squeeze(1).tolist():
                p.exits[p.alive[i]], p.preds[p.alive[i]] = k, int(pred[i])
            return torch.nonzero(~(leave | gone)).squeeze(1).to(self.device)
        for i in torch.nonzero(leave).squeeze(1).tolist():
            p.exits[p.alive[i]], p.preds[p.alive[i]] = k, int(pred[i])
        return torch.nonzero(~leave).squeeze(1).to(self.device)
