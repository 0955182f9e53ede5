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
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from offramp.core.execution import Exit, Stage, batch_steps
from offramp.core.modes import ExitMode, StageKind

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


class ServingLoop:
    """Serve batches of a model with ``segments`` and ``heads`` (``nn.ModuleList``s).

    The exit decision at early exit k, on the head's real output: ``rule`` ``maxprob`` (exit
    when the max softmax >= ``thresholds[k]``; ``inf``: never), ``entropy`` (exit when the
    normalised entropy H / log C <= ``thresholds[k]``) or ``table`` (exit where ``table[sample
    id]`` says: a saved policy's per-sample exits). ``active[k]``: whether exit k is consulted.
    ``handoff(k, act)`` passes a whole batch's activation to segment k+1 (identity in eager
    PyTorch; a copy into the next graph's static input for CUDA graphs).
    """

    def __init__(self, model: nn.Module, device: str, dtype: torch.dtype, mode: ExitMode | str,
                 thresholds: Sequence[float], active: Sequence[bool] | None = None,
                 handoff: Callable[[int, Any], Any] | None = None, rule: str = "maxprob",
                 table: Sequence[int] | None = None):
        if rule not in RULES:
            raise ValueError(f"rule {rule!r} is not one of {RULES}")
        if rule == "table" and table is None:
            raise ValueError("rule 'table' needs the per-sample exit table")
        self.segments, self.heads = model.segments, model.heads
        self.k_exits = len(self.segments)
        self.device, self.dtype, self.mode = device, dtype, ExitMode.parse(mode)
        self.thresholds = [float(t) for t in thresholds]
        self.rule, self.table = rule, (list(table) if table is not None else None)
        self.active = list(active) if active is not None else [True] * self.k_exits
        self.handoff = handoff or (lambda k, act: act)

    @torch.inference_mode()
    def run(self, requests: Sequence[Any], samples: Sequence[int] | None = None) -> BatchRun:
        """Serve one batch of single-request inputs (``samples``: their sample ids, for the
        ``table`` rule); every stage is timed."""
        clock = StageClock(self.device)
        clock.mark()  # from here: the loop's own setup of the batch counts as its overhead
        size = len(requests)
        self._samples = list(samples) if samples is not None else [-1] * size
        self._preds = [-1] * size
        exits = [-1] * size
        alive = list(range(size))  # request index of each row still going on
        done: list[Stage] = []
        act: Any = None
        logits: Tensor | None = None
        keep_rows: Tensor | None = None
        steps = batch_steps(self.mode, size, self.active)
        item = next(steps)
        while True:
            if isinstance(item, Exit):
                k = item.k
                if k == self.k_exits - 1:
                    pred = logits.argmax(dim=-1).tolist()
                    for i, r in enumerate(alive):
                        if exits[r] < 0:
                            exits[r], self._preds[r] = k, pred[i]
                    going = 0
                else:
                    going = int(keep_rows.numel())
                try:
                    item = steps.send(going)
                except StopIteration:
                    break
                continue
            st = item
            kind = st.kind
            if kind is StageKind.OVERHEAD:
                act = place(stack(requests), self.device, self.dtype)
            elif kind is StageKind.SEGMENT:
                act = self.segments[st.k](act)
            elif kind is StageKind.HEAD:
                logits = self.heads[st.k](act)
            elif kind is StageKind.CHECK:
                keep_rows = self._decide(st.k, logits, alive, exits)
            elif kind is StageKind.COMPACT:
                act = gather(act, keep_rows)
                alive = [alive[i] for i in keep_rows.tolist()]
                keep_rows = torch.arange(len(alive), device=self.device)
            elif kind is StageKind.HANDOFF:
                act = self.handoff(st.k, act)
            clock.mark()
            done.append(st)
            item = next(steps, None)
            if item is None:
                break
        return BatchRun(exits, list(zip(done, clock.elapsed_ms(), strict=True)), self._preds)

    def _leaving(self, k: int, logits: Tensor, alive: list[int]) -> Tensor:
        """(rows,) bool on the host: which rows of the batch the rule lets exit at k."""
        if self.rule == "table":
            return torch.tensor([self.table[self._samples[r]] == k for r in alive], dtype=torch.bool)
        p = torch.softmax(logits.float(), dim=-1)
        if self.rule == "maxprob":
            return (p.amax(dim=-1) >= self.thresholds[k]).cpu()
        ent = -(p.double() * torch.log(p.double().clamp_min(1e-12))).sum(dim=-1) / math.log(p.shape[-1])
        return (ent.clamp(0.0, 1.0).float() <= self.thresholds[k]).cpu()

    def _decide(self, k: int, logits: Tensor, alive: list[int], exits: list[int]) -> Tensor:
        """Exit decision at early exit k: rows (of the current batch) of those going on."""
        leave = self._leaving(k, logits, alive)
        pred = logits.argmax(dim=-1).cpu()
        if self.mode.keeps_size:
            # The batch keeps every row; rows that left earlier are neither counted nor re-exited.
            gone = torch.tensor([exits[r] >= 0 for r in alive], dtype=torch.bool)
            leave &= ~gone
            for i in torch.nonzero(leave).squeeze(1).tolist():
                exits[alive[i]], self._preds[alive[i]] = k, int(pred[i])
            return torch.nonzero(~(leave | gone)).squeeze(1).to(self.device)
        for i in torch.nonzero(leave).squeeze(1).tolist():
            exits[alive[i]], self._preds[alive[i]] = k, int(pred[i])
        return torch.nonzero(~leave).squeeze(1).to(self.device)
