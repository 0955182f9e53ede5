"""The reference engine's lookup lane (exit mode ``async``, core/execution.py): an early exit's
head and check run in a SimPy process of their own, beside the batch's backbone, and its
leavers finish when the check ends. The fast engine adds the same times to its lookup clock.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import simpy

from offramp.core.execution import Stage
from offramp.core.modes import StageKind


class LookupLane:
    """One batch's lookups: at most one in flight (the backbone waits for it at the next
    consulted exit)."""

    def __init__(self, env: simpy.Environment):
        self.env = env
        self.pending: list[float] | None = None  # the lookup being gathered: its stage times
        self.acc: list[float] = []  # its leavers' time by stage kind
        self.proc: simpy.Process | None = None

    def add(self, st: Stage, dt: float, acc: list[float]) -> None:
        """An aside stage of ``dt`` s; a head starts a lookup from the backbone's ``acc``."""
        if st.kind is StageKind.HEAD:
            self.pending, self.acc = [], acc.copy()
        self.pending.append(dt)
        self.acc[st.kind.code] += dt

    def leave(self, leave: Callable[[list[float]], None], acc: list[float]) -> None:
        """An exit's leavers go: ``leave(acc)`` now, or, after an aside lookup, run the lookup
        from now and ``leave`` with its time by kind when it ends."""
        if self.pending is None:
            leave(acc)
            return
        self.proc = self.env.process(self._run(self.pending, self.acc, leave))
        self.pending = None

    def _run(self, dts: list[float], acc: list[float], leave: Callable[[list[float]], None]
             ) -> Generator[Any, Any, None]:
        for dt in dts:
            yield self.env.timeout(dt)
        leave(acc)

    def wait(self) -> Generator[Any, Any, float]:
        """Wait for the lookup in flight, if it has not ended; returns the time waited."""
        if self.proc is None or self.proc.processed:
            return 0.0
        start = self.env.now
        yield self.proc
        return self.env.now - start
