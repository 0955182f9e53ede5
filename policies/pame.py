"""PAME (ICS'22): precision-aware exits placed where they shorten batched inference.

1. Precision-aware thresholds on the max softmax probability, per candidate exit, by
   :func:`thresholds.from_tolerance` on the samples that reach it, with the conditional target
   ``T ← (T − a_i·(1 − r_i)) / r_i`` after every exit already placed (full resolution, not
   PAME's 0.05 grid). The mixed val accuracy therefore stays ≥ τ % of the full model's.
2. Batching Pattern Matrix: the val samples, in their order in the trace, are cut into batches
   of ``max_batch`` (the trailing partial batch is dropped). Assumption: at saturation the
   server forms full batches in arrival order, and requests arrive in an order unrelated to
   their difficulty. P_e[m, k] = share of batches entering the segment after the previous
   placed exit with m samples and leaving candidate e with k survivors; at the first step
   m = max_batch and this is PAME's P[e][k] (kept, full resolution, in ``pattern_``).
3. Inference Time Matrix: T_e(m, k) = s1_e(m) + exit check + gather(k) + s2_e(k), with s1 the
   segments from the previous placed exit to e plus head e at m, the exit check the profile's
   ``check`` row at e, gather = the profile's ``compact`` row at k (paid when 0 < k < m) or its
   ``handoff`` row (when the batch goes on whole), s2 the rest of the backbone and the last
   head at k: exactly the stages :mod:`offramp.profiling.stages` runs, as the simulator does;
   every size is rounded
   up to the smallest engine size ≥ it (``engine_sizes``). In ``keep`` mode the batch keeps
   size m while anyone is left and there is no gather. At the first step m = max_batch and
   this is PAME's T_e(k) (in ``times_``).
4. Greedy placement: start with no exit; at each step try adding every exit not yet placed
   (before or after those placed: thresholds, P and T of the whole chain are recomputed from
   the survivors in depth order), keep the one with the lowest expected batch latency
   E = overhead + Σ_exits Σ_{m,k} P[m, k]·T(m, k) + E[rest of the network] if it is lower than
   without it and the tail rule holds; stop when no candidate helps. (The reference's
   "begin = e" recursion is the special case of adding exits in depth order only; it gets
   stuck after placing a deep exit first.) Tail rule: the worst-case batch latency over
   every possible survivor count at every placed exit must stay ≤ (1 +
   ``tail_tolerance_pct``/100) × the no-exit batch latency (placed heads always cost
   something, so 0 % would forbid any exit).

Exits not placed are disabled (threshold inf); ``active_exits_`` lists which heads PAME
would run. Latency here is per batch on one GPU, overhead included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from offramp.common.errors import InputError
from offramp.core import execution as stages
from offramp.core.modes import ExitMode, StageKind
from offramp.profiling.format import LatencyProfile
from offramp.profiling.latency import LatencyModel
from offramp.traces.format import ExitTrace

from .base import ExitPolicy
from .costs import as_latency_model
from .thresholds import from_tolerance


class _Stages:
    """Stage times (ms) indexed by batch size 0..B, composed by the execution rule.

    :mod:`offramp.profiling.stages` says which stages a batch runs; this only tabulates
    them over every active count m (and survivor count k) for the matrices.
    """

    def __init__(self, model: LatencyModel, n_exits: int, max_batch: int, mode: ExitMode | str):
        mode = ExitMode.parse(mode)
        self.k_exits, self.b, self.mode, self.model = n_exits, max_batch, mode, model
        sizes = range(max_batch + 1)
        self.overhead = model.stages_ms([stages.Stage(StageKind.OVERHEAD, 0, max_batch)])
        # After exit e: what the rule charges when m samples reached it and k go on.
        step = stages.exit_step
        self.after = np.array([[[model.stages_ms(step(mode, e, max_batch, m, k)) if k <= m else 0.0
                                 for k in sizes] for m in sizes] for e in range(n_exits - 1)])
        self._stretch: dict[tuple[int, int], np.ndarray] = {}

    def stretch(self, start: int, stop: int, m: np.ndarray) -> np.ndarray:
        """Segments start..stop, head ``stop`` and its check, with m samples active (0: none)."""
        if (start, stop) not in self._stretch:
            self._stretch[start, stop] = np.array(
                [self.model.stages_ms(stages.reach_exit(self.mode, self.b, a, start, stop,
                                                        self.k_exits))
                 if a else 0.0 for a in range(self.b + 1)])
        return self._stretch[start, stop][np.asarray(m)]

    def gather(self, e: int, m: np.ndarray, k: np.ndarray) -> np.ndarray:
        return self.after[e][np.asarray(m), np.asarray(k)]


class _ValData:
    """The fitting split: confidence, correctness, batch of each sample, precision target."""

    def __init__(self, conf: np.ndarray, correct: np.ndarray, max_batch: int, target: float):
        self.conf, self.correct, self.target = conf, correct, target
        self.n_batches = conf.shape[0] // max_batch
        self.batch_of = np.full(conf.shape[0], -1)
        self.batch_of[: self.n_batches * max_batch] = np.repeat(np.arange(self.n_batches), max_batch)


class PAME(ExitPolicy):
    """PAME's precision-aware thresholds and greedy exit placement for batches of ``max_batch``."""

    name = "pame"
    unsaved_params = ("latency",)  # a profile: the study names it

    def __init__(self, tolerance_pct: float, latency: LatencyModel | LatencyProfile,
                 max_batch: int, exit_mode: ExitMode | str = ExitMode.SHRINK,
                 engine_sizes: Sequence[int] | None = None, tail_tolerance_pct: float = 5.0):
        self.tolerance_pct = tolerance_pct
        self.latency = latency
        self.max_batch = max_batch
        self.exit_mode = exit_mode
        self.engine_sizes = engine_sizes
        self.tail_tolerance_pct = tail_tolerance_pct

    def _check(self, trace: ExitTrace, n_val: int) -> None:
        if not 0 < self.tolerance_pct <= 100:
            raise InputError("policy", "tolerance_pct", f"must be in (0, 100], got "
                             f"{self.tolerance_pct}", "use e.g. 99 for a 1% relative drop")
        if self.exit_mode not in set(ExitMode) or not ExitMode(self.exit_mode).consults_early_exits:
            got = getattr(self.exit_mode, "value", self.exit_mode)
            raise InputError("policy", "server.exit_mode", f"PAME places exits for exit mode "
                             f"'shrink' or 'keep', got {got!r}", "set server.exit_mode to shrink "
                             "or keep")
        if not 1 <= self.max_batch <= n_val:
            raise InputError("policy", "server.max_batch", f"PAME needs 1 <= max_batch <= "
                             f"{n_val} (the val samples), got {self.max_batch}",
                             "lower server.max_batch or use a larger trace")

    def fit(self, trace: ExitTrace, split: str = "val") -> PAME:
        ids = trace.indices(split)
        self._check(trace, ids.size)
        k_exits, b = trace.n_exits, self.max_batch
        st = _Stages(as_latency_model(self.latency, self.engine_sizes), k_exits, b, self.exit_mode)
        data = _ValData(trace.maxprob[ids].astype(float), trace.correct[ids], b,
                        trace.correct[ids, -1].mean() * self.tolerance_pct / 100.0)
        no_exit = self._evaluate(st, data, [])
        tail_limit = no_exit["expected_ms"] * (1 + self.tail_tolerance_pct / 100.0)
        singles = [self._evaluate(st, data, [e]) for e in range(k_exits - 1)]
        self.pattern_ = np.array([ev["patterns"][0][b] for ev in singles])
        rest = [st.stretch(e + 1, k_exits - 1, np.arange(b + 1)) for e in range(k_exits - 1)]
        self.times_ = np.array([st.overhead + ev["times"][0][b] + r
                                for ev, r in zip(singles, rest, strict=True)])
        current, steps = no_exit, []
        while True:
            cands = {e: self._evaluate(st, data, sorted(current["exits"] + [e]))
                     for e in range(k_exits - 1) if e not in current["exits"]}
            steps.append({"exits": current["exits"], "expected_ms": current["expected_ms"],
                          "candidates": {e: {"expected_ms": float(c["expected_ms"]),
                                             "worst_ms": float(c["worst_ms"])}
                                         for e, c in cands.items()}})
            ok = [c for c in cands.values() if c["worst_ms"] <= tail_limit + 1e-9]
            best = min(ok, key=lambda c: c["expected_ms"], default=None)
            if best is None or best["expected_ms"] >= current["expected_ms"] - 1e-9:
                break
            current = best
        self.exits_ = current["exits"]
        self.thresholds_ = current["thresholds"]
        self.active_exits_ = np.array([k in self.exits_ for k in range(k_exits - 1)] + [True])
        self.n_exits_ = k_exits
        exits = self.exit_index(trace, ids)
        acc = float(data.correct[np.arange(ids.size), exits].mean())
        self.report_ = {
            "exits": self.exits_, "thresholds": [float(x) for x in self.thresholds_],
            "expected_batch_ms": current["expected_ms"], "no_exit_batch_ms": no_exit["expected_ms"],
            "worst_batch_ms": current["worst_ms"], "tail_limit_ms": tail_limit,
            "latency_saving_pct": 100.0 * (1 - current["expected_ms"] / no_exit["expected_ms"]),
            "val_accuracy": acc,
            "val_relative_accuracy_pct": 100.0 * acc / data.correct[:, -1].mean(),
            "batches": data.n_batches, "max_batch": b, "exit_mode": str(self.exit_mode),
            "steps": steps,
        }
        return super().fit(trace, split)

    def explain(self) -> str | None:
        """Which exits PAME placed and why (from ``report_``), or why it placed none."""
        r = getattr(self, "report_", None)
        if r is None:
            return None
        none_ms, limit = r["no_exit_batch_ms"], r["tail_limit_ms"]
        if r["exits"]:
            return (f"placed exits {r['exits']}: a batch of {r['max_batch']} takes "
                    f"{r['expected_batch_ms']:.3g} ms on average (worst case "
                    f"{r['worst_batch_ms']:.3g}) against {none_ms:.3g} ms with none")
        cands = r["steps"][0]["candidates"] if r["steps"] else {}
        if not cands:
            return "placed no exit: the model has no early exit"
        fast = {e: c for e, c in cands.items() if c["expected_ms"] < none_ms - 1e-9}
        if not fast:
            e, c = min(cands.items(), key=lambda ec: ec[1]["expected_ms"])
            return (f"placed no exit: every early exit makes a batch slower on average (the best, "
                    f"exit {e}, {c['expected_ms']:.3g} ms against {none_ms:.3g} ms with none): "
                    "its head costs more than the samples that leave save")
        e, c = min(fast.items(), key=lambda ec: ec[1]["expected_ms"])
        return (f"placed no exit: exit {e} would save time on average ({c['expected_ms']:.3g} vs "
                f"{none_ms:.3g} ms) but its worst-case batch, {c['worst_ms']:.3g} ms, exceeds the "
                f"tail limit {limit:.3g} ms (tail_tolerance_pct {self.tail_tolerance_pct:g}); "
                "raise tail_tolerance_pct to allow it")

    def _evaluate(self, st: _Stages, data: _ValData, exits: list[int]) -> dict[str, Any]:
        """Thresholds, expected and worst-case batch latency with exits placed at ``exits``."""
        b, n_batches = st.b, data.n_batches
        target, active = data.target, np.ones(data.conf.shape[0], dtype=bool)
        thresholds = np.full(st.k_exits - 1, np.inf)
        size_in = np.full(n_batches, b)
        expected, prev = st.overhead, -1
        m_grid, k_grid = np.meshgrid(np.arange(b + 1), np.arange(b + 1), indexing="ij")
        patterns, times = [], []
        for e in exits:
            theta = self._threshold(data.conf[active][:, [e]], data.correct[active][:, [e, -1]],
                                    target)
            stay = active & ~(data.conf[:, e] >= theta)
            k = np.bincount(data.batch_of[stay & (data.batch_of >= 0)], minlength=n_batches)
            pattern = np.zeros((b + 1, b + 1))
            np.add.at(pattern, (size_in, k), 1.0 / n_batches)
            time = st.stretch(prev + 1, e, m_grid) + st.gather(e, m_grid, k_grid)
            expected += float((pattern * time).sum())
            patterns.append(pattern)
            times.append(time)
            exited = active & ~stay
            if exited.any() and stay.any():
                r = stay.sum() / active.sum()
                target = (target - data.correct[exited, e].mean() * (1 - r)) / r
            thresholds[e] = theta
            active, size_in, prev = stay, k, e
        expected += float(st.stretch(prev + 1, st.k_exits - 1, size_in).mean())
        return {"exits": list(exits), "thresholds": thresholds, "expected_ms": expected,
                "worst_ms": self._worst(st, list(exits)), "patterns": patterns, "times": times}

    def _threshold(self, conf: np.ndarray, correct: np.ndarray, target: float) -> float:
        """PAME's threshold at one exit for a mixed-accuracy target on the samples reaching it."""
        if conf.shape[0] == 0:
            return float("inf")
        full = correct[:, -1].mean()
        tau = 100.0 if full <= 0 else float(np.clip(100.0 * target / full, 1e-9, 100.0))
        return float(from_tolerance(np.hstack([conf, conf]), correct, tau)[0])

    @staticmethod
    def _worst(st: _Stages, exits: list[int]) -> float:
        """Worst-case batch latency over every survivor count at every placed exit."""
        sizes = np.arange(st.b + 1)
        start = exits[-1] + 1 if exits else 0
        worst = st.stretch(start, st.k_exits - 1, sizes)  # from each size m onwards
        for i in range(len(exits) - 1, -1, -1):
            e, lo = exits[i], (exits[i - 1] + 1 if i > 0 else 0)
            m, k = np.meshgrid(sizes, sizes, indexing="ij")
            total = st.stretch(lo, e, m) + st.gather(e, m, k) + worst[k]
            worst = np.where(k <= m, total, -np.inf).max(axis=1)
        return float(st.overhead + worst[st.b])

    def exit_mask(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        mp = trace.maxprob[samples]
        mask = np.zeros(mp.shape, dtype=bool)
        mask[:, :-1] = mp[:, :-1] >= self.thresholds_[None, :]
        return mask

    def fitted_params(self) -> dict[str, Any]:
        return {"exits": self.exits_, "thresholds": self.thresholds_}
