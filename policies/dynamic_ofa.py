"""Dynamic-OFA's runtime manager: switch between operating points to hold a latency target.

The "levels" are fitted static policies ordered from the cheapest / least accurate to the most
accurate (e.g. entropy at several τ). One manager serves the whole server (global, not one
per replica): one current level, one window of the latencies of requests finished anywhere.

- Counting (``unit``): ``window``, ``warmup`` and ``up_after`` count finished **requests**
  (the default, as in the paper's per-frame loop), dispatched **batches** (a batch server's
  natural clock: the window holds the latencies of requests that finished during the last
  ``window`` dispatches) or simulated **seconds**. A request count means something else at
  every load and batch size; batches and seconds do not.
- Window: the latencies observed at the current level over the last ``window`` units, after
  skipping the first ``warmup`` units after a switch; it is full once it spans ``window``
  units. Outliers are dropped before the mean: the ``trim`` largest and ``trim`` smallest
  values (a trimmed mean; by default trim = max(1, n // 10) for n ≥ 3 values in the window
  (n = ``window`` when counting requests), else 0).
- Down: a full window whose mean exceeds ``latency_target_ms`` → one level down at once.
- Up: the level's val accuracy < ``accuracy_target``, at least ``up_after`` requests seen at
  this level, a full window within target and no lock → one level up.
- Lock (``lock=True``): a rise is *failed* when the level it reached is left downwards within
  ``warmup + 2·window`` requests; then no rise happens for ``hold_s`` simulated seconds.
- A switch costs ``switch_cost_ms``: each replica stalls that long before its first batch
  after the switch (``begin_batch``). The new level decides from the next batch dispatched
  anywhere on; batches already running finish with the level they started with.

The fitted :class:`DynamicOFA` holds only the levels and their val accuracies and never
changes; each run gets its own :class:`ManagerRun` (``controller(n_replicas)``), whose
``history`` lists (time in s, level) of every switch, starting with (0, initial level).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from offramp.common.errors import InputError
from offramp.traces.format import ExitTrace

from .base import Controller, ExitPolicy, StatefulPolicy


class WindowUnit(StrEnum):
    """What the manager's ``window``, ``warmup`` and ``up_after`` count."""

    REQUESTS = "requests"
    BATCHES = "batches"
    SECONDS = "seconds"


class DynamicOFA(StatefulPolicy):
    """A global runtime manager over static ``levels`` (cheapest first)."""

    name = "dynamic-ofa"

    def __init__(self, levels: Sequence[ExitPolicy], latency_target_ms: float,
                 accuracy_target: float, window: int = 20, warmup: int = 20, up_after: int = 70,
                 switch_cost_ms: float = 0.0, lock: bool = True, hold_s: float = 5.0,
                 initial_level: int | None = None, trim: int | None = None,
                 unit: WindowUnit | str = WindowUnit.REQUESTS):
        self.levels = list(levels)
        self.latency_target_ms = latency_target_ms
        self.accuracy_target = accuracy_target
        self.window = window
        self.warmup = warmup
        self.up_after = up_after
        self.switch_cost_ms = switch_cost_ms
        self.lock = lock
        self.hold_s = hold_s
        self.initial_level = initial_level
        self.trim = trim
        self.unit = WindowUnit(unit)

    def fit(self, trace: ExitTrace, split: str = "val") -> DynamicOFA:
        if not self.levels:
            raise InputError("policy", "levels", "needs at least one level", "list the levels")
        if any(not lvl.is_static for lvl in self.levels):
            raise InputError("policy", "levels", "levels must be static policies",
                             "use e.g. entropy or maxprob levels")
        if not (self.window > 0 and self.warmup >= 0 and self.up_after >= 0
                and self.latency_target_ms > 0):
            raise InputError("policy", "dynamic-ofa", "window > 0, warmup >= 0, up_after >= 0 and "
                             "latency_target_ms > 0 are needed", "fix the manager's settings")
        if self.unit is not WindowUnit.SECONDS and any(
                float(v) % 1 for v in (self.window, self.warmup, self.up_after)):
            raise InputError("policy", "dynamic-ofa", f"window, warmup and up_after count "
                             f"{self.unit.value}: whole numbers only", "round them, or count "
                             "seconds (unit: seconds)")
        start = len(self.levels) - 1 if self.initial_level is None else self.initial_level
        if not 0 <= start < len(self.levels):
            raise InputError("policy", "initial_level", f"{start} is not a level index "
                             f"(0..{len(self.levels) - 1})", "pick an existing level")
        ids = trace.indices(split)
        self.level_accuracy_ = []
        for lvl in self.levels:
            if not hasattr(lvl, "n_exits_"):
                lvl.fit(trace, split)
            exits = lvl.exit_index(trace, ids)
            self.level_accuracy_.append(float(trace.correct[ids, exits].mean()))
        self.start_level_ = start
        super().fit(trace, split)
        return self

    def exit_mask(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        """Outside a run the manager decides as its initial level."""
        return self.levels[self.start_level_].exit_mask(trace, samples)

    def controller(self, n_replicas: int) -> ManagerRun:
        """The manager's state for one run: level, window, lock and switch history."""
        self._check_fitted_any()
        return ManagerRun(self, n_replicas)



class ManagerRun(Controller):
    """One run of the manager: current level, the level each replica runs, the latency window,
    the lock, and ``history`` (time in s, level) of every switch from (0, initial level).

    Its clock counts the manager's unit since the last switch: finished requests, dispatched
    batches or simulated seconds (``_since``); the window keeps (clock, latency ms) pairs."""

    def __init__(self, policy: DynamicOFA, n_replicas: int):
        super().__init__(policy)
        self.m = policy
        self.level = policy.start_level_
        self.active = [policy.start_level_] * n_replicas  # the level each running batch uses
        self.loaded = [policy.start_level_] * n_replicas
        self.history: list[tuple[float, int]] = [(0.0, policy.start_level_)]
        by_requests = policy.unit is WindowUnit.REQUESTS
        self._recent: deque[tuple[float, float]] = deque(
            maxlen=int(policy.window) if by_requests else None)
        self._requests = 0  # finished since the last switch
        self._batches = 0  # dispatched since the last switch
        self._switched_s = self._now = 0.0
        self._rose = False
        self._locked_until = -np.inf

    def _since(self, now_s: float) -> float:
        """The manager's clock: its unit counted since the last switch."""
        unit = self.m.unit
        if unit is WindowUnit.REQUESTS:
            return float(self._requests)
        if unit is WindowUnit.BATCHES:
            return float(self._batches)
        return now_s - self._switched_s

    def begin_batch(self, now_s: float, replica: int) -> float:
        self._batches += 1
        self.active[replica] = self.level
        if self.loaded[replica] != self.level:
            self.loaded[replica] = self.level
            return self.m.switch_cost_ms / 1000.0
        return 0.0

    def decide(self, trace: ExitTrace, k: int, samples: np.ndarray, replica: int = 0
               ) -> np.ndarray:
        return self.m.levels[self.active[replica]].decide(trace, k, samples)

    def window_mean_ms(self, now_s: float | None = None) -> float:
        """Mean of the current window without outliers (NaN until the window is full)."""
        m = self.m
        if m.unit is WindowUnit.REQUESTS:
            full = len(self._recent) >= m.window
        else:
            clock = self._since(self._now if now_s is None else now_s)
            # The last ``window`` units: clocks in (clock − window, clock].
            while self._recent and self._recent[0][0] <= clock - m.window:
                self._recent.popleft()
            full = clock - m.warmup >= m.window
        if not full or not self._recent:
            return float("nan")
        x = np.sort(np.array([lat for _, lat in self._recent]))
        n = m.window if m.unit is WindowUnit.REQUESTS else x.size
        trim = m.trim if m.trim is not None else (max(1, int(n) // 10) if n >= 3 else 0)
        if 0 < trim and 2 * trim < x.size:
            x = x[trim:-trim]
        return float(x.mean())

    def observe(self, now_s: float, latency_s: float, replica: int, exit_index: int) -> None:
        m = self.m
        self._requests += 1
        self._now = now_s
        clock = self._since(now_s)
        if self._rose and clock > m.warmup + 2 * m.window:
            self._rose = False
        if clock <= m.warmup:
            return
        self._recent.append((clock, latency_s * 1000.0))
        mean = self.window_mean_ms(now_s)
        if np.isnan(mean):
            return
        if mean > m.latency_target_ms:
            if self.level > 0:
                if m.lock and self._rose:
                    self._locked_until = now_s + m.hold_s
                self._switch(self.level - 1, now_s, rose=False)
            return
        if (self.level < len(m.levels) - 1 and clock >= m.up_after
                and m.level_accuracy_[self.level] < m.accuracy_target
                and now_s >= self._locked_until):
            self._switch(self.level + 1, now_s, rose=True)

    def _switch(self, level: int, now_s: float, rose: bool) -> None:
        self.level = level
        self.history.append((float(now_s), level))
        self._recent.clear()
        self._requests = self._batches = 0
        self._switched_s = float(now_s)
        self._rose = rose
