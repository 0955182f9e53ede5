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

from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from offramp.common.errors import InputError
from offramp.traces.format import ExitTrace

from . import ofa_rule as rule
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

    Its state lives in arrays (:mod:`.ofa_rule`, the rule's one home), which the fast engine's
    compiled loop changes in place; its clock counts the manager's unit since the last switch
    (finished requests, dispatched batches or simulated seconds)."""

    def __init__(self, policy: DynamicOFA, n_replicas: int):
        self.policy = self.m = policy  # history is the arrays' (below), not a list
        start = policy.start_level_
        units = {WindowUnit.REQUESTS: rule.BY_REQUESTS, WindowUnit.BATCHES: rule.BY_BATCHES,
                 WindowUnit.SECONDS: rule.BY_SECONDS}
        self.st = np.zeros(7, np.int64)
        self.st[rule.LEVEL], self.st[rule.N_HIST] = start, 1
        self.sf = np.array([0.0, 0.0, -np.inf])
        self.pi = np.array([units[policy.unit], len(policy.levels), int(policy.lock),
                            -1 if policy.trim is None else int(policy.trim)], np.int64)
        self.pf = np.array([policy.window, policy.warmup, policy.up_after,
                            policy.latency_target_ms, policy.accuracy_target,
                            policy.switch_cost_ms / 1000.0, policy.hold_s], float)
        self.level_acc = np.array(policy.level_accuracy_, float)
        self.arrays = {"active": np.full(n_replicas, start, np.int64),
                       "loaded": np.full(n_replicas, start, np.int64),
                       "win_c": np.zeros(64), "win_l": np.zeros(64),
                       "hist_t": np.zeros(16), "hist_l": np.full(16, start, np.int64)}

    def make_room(self, more: int) -> None:
        """Grow the window and history arrays until ``more`` observations fit."""
        a = self.arrays
        while not rule.room(self.st, a["win_c"], a["hist_t"], more):
            for name in ("win_c", "win_l", "hist_t", "hist_l"):
                a[name] = np.concatenate([a[name], np.zeros_like(a[name])])

    @property
    def level(self) -> int:
        return int(self.st[rule.LEVEL])

    @property
    def active(self) -> list[int]:
        """The level each replica's running batch decides at."""
        return self.arrays["active"].tolist()

    @property
    def history(self) -> list[tuple[float, int]]:
        n, a = int(self.st[rule.N_HIST]), self.arrays
        return list(zip(a["hist_t"][:n].tolist(), a["hist_l"][:n].tolist(), strict=True))

    @property
    def _recent(self) -> list[tuple[float, float]]:
        """The window's (clock, latency ms) rows."""
        lo, hi, a = int(self.st[rule.LO]), int(self.st[rule.HI]), self.arrays
        return list(zip(a["win_c"][lo:hi].tolist(), a["win_l"][lo:hi].tolist(), strict=True))

    def begin_batch(self, now_s: float, replica: int) -> float:
        a = self.arrays
        return float(rule.begin_batch(self.st, self.pf, a["active"], a["loaded"], replica))

    def decide(self, trace: ExitTrace, k: int, samples: np.ndarray, replica: int = 0
               ) -> np.ndarray:
        return self.m.levels[int(self.arrays["active"][replica])].decide(trace, k, samples)

    def window_mean_ms(self, now_s: float | None = None) -> float:
        """Mean of the current window without outliers (NaN until the window is full)."""
        now = self.sf[rule.NOW] if now_s is None else now_s
        a = self.arrays
        return float(rule.window_mean(self.st, self.sf, self.pi, self.pf, a["win_c"],
                                      a["win_l"], now))

    def observe(self, now_s: float, latency_s: float, replica: int, exit_index: int) -> None:
        self.make_room(1)
        a = self.arrays
        rule.observe(self.st, self.sf, self.pi, self.pf, self.level_acc, a["win_c"],
                     a["win_l"], a["hist_t"], a["hist_l"], float(now_s), latency_s * 1000.0)
