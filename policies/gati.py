"""Gati-style learned selectors: per exit, predict whether the exit agrees with the full model.

Gati's Predictor networks are the trace's exit heads here; its Selector per exit is a ridge
logistic regression (Newton's method, NumPy) on [softmax_k (when the trace stores it), max_k,
entropy_k, earlier exits' selector probabilities], trained on the val split to predict
agreement with the last exit's prediction. A sample exits at exit k iff P_k > ``threshold``.

Placement, on val: over every subset S of the early exits (exhaustive, so K ≤ 13), with exits
outside S disabled, the expected latency
``E[L] = Σ_j Π_{i<j}(1−h_i)·h_j·(T_S(k_j)+l_j) + Π_j(1−h_j)·T_S(N)`` (h: conditional hit
rates, l = ``lookup_ms``: a hit's extra latency) is minimised subject to the accuracy
``Σ_j P(exit j)·a_j + P(no exit)·A ≥ accuracy_target`` (absolute, ground truth). T_S(k), the
time until a sample answered at exit k leaves, is ``subset_costs(S)`` where given — the
execution rule's with only S consulted under the server's exit mode
(:func:`.costs.placement_costs`): with synchronous lookups a miss pays every consulted head
and check on its way, with Gati's asynchronous ones (exit mode ``async``) nothing unless a
lookup outlasts the backbone — else ``costs[k]`` whatever S. Both are computed exactly as val averages. With
``threshold=None`` (the default) the threshold is searched on val jointly with the placement
over 0.50, 0.55, … 0.95, 0.97, 0.98, 0.99, 0.995; a given threshold is used as it is. If
nothing meets the target the most accurate configuration is kept and ``feasible_`` is False.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from offramp.common.errors import InputError
from offramp.traces.format import ExitTrace, require_entropy

from .costs import check_costs
from .learned import LearnedScorePolicy

THRESHOLD_GRID = (*np.round(np.arange(0.5, 0.951, 0.05), 2).tolist(), 0.97, 0.98, 0.99, 0.995)
MAX_EXHAUSTIVE = 12  # early exits


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """Ridge logistic regression by Newton's method; returns weights with the bias last."""
    x1 = np.hstack([x, np.ones((x.shape[0], 1))])
    w = np.zeros(x1.shape[1])
    reg = np.full(x1.shape[1], l2)
    reg[-1] = 1e-8
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x1 @ w, -30, 30)))
        grad = x1.T @ (p - y) + reg * w
        hess = (x1 * (p * (1 - p))[:, None]).T @ x1 + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def _predict(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x @ w[:-1] + w[-1], -30, 30)))


class Gati(LearnedScorePolicy):
    """Learned agreement selectors per exit and a latency-optimal exit subset under an
    accuracy target."""

    name = "gati"
    unsaved_params = ("subset_costs",)  # a function; the placement's times are in placed_ms

    def __init__(self, accuracy_target: float, costs: Sequence[float],
                 lookup_ms: float | Sequence[float] = 0.0, threshold: float | None = None,
                 l2: float = 1.0,
                 subset_costs: Callable[[tuple[bool, ...]], np.ndarray] | None = None):
        self.accuracy_target = accuracy_target
        self.costs = costs
        self.subset_costs = subset_costs
        self.lookup_ms = lookup_ms
        self.threshold = threshold
        self.l2 = l2

    def _features(self, trace: ExitTrace, k: int, rows: np.ndarray, prev: list[np.ndarray]
                  ) -> np.ndarray:
        parts = []
        if trace.softmax is not None:
            parts.append(np.asarray(trace.softmax[rows, k], dtype=float))
        parts += [trace.maxprob[rows, k, None].astype(float), trace.entropy[rows, k, None].astype(float)]
        parts += [p[:, None] for p in prev]
        return np.hstack(parts)

    def _selector_probs(self, trace: ExitTrace, rows: np.ndarray) -> np.ndarray:
        probs: list[np.ndarray] = []
        for k, w in enumerate(self.selectors_):
            probs.append(_predict(self._features(trace, k, rows, probs), w))
        out = np.ones((rows.size, trace.n_exits))
        out[:, :-1] = np.stack(probs, axis=1) if probs else out[:, :0]
        return out

    def fit(self, trace: ExitTrace, split: str = "val") -> Gati:
        require_entropy(trace, "gati (its selectors read the entropy)")
        c = check_costs(self.costs, trace.n_exits)
        k_early = trace.n_exits - 1
        if k_early > MAX_EXHAUSTIVE:
            raise InputError("policy", "gati", f"{k_early} early exits are too many for the "
                             f"exhaustive placement (at most {MAX_EXHAUSTIVE})", "use fewer exits")
        if not 0 < self.accuracy_target <= 1:
            raise InputError("policy", "accuracy_target", f"must be in (0, 1], got "
                             f"{self.accuracy_target}", "give an absolute accuracy, e.g. 0.9")
        lookup = np.broadcast_to(np.asarray(self.lookup_ms, dtype=float), (trace.n_exits,))
        ids = trace.indices(split)
        agree = trace.agree[ids]
        self.selectors_, probs = [], []
        for k in range(k_early):
            x = self._features(trace, k, ids, probs)
            self.selectors_.append(fit_logistic(x, agree[:, k].astype(float), self.l2))
            probs.append(_predict(x, self.selectors_[-1]))
        p = np.stack(probs, axis=1) if probs else np.zeros((ids.size, 0))
        correct = trace.correct[ids]
        grid = THRESHOLD_GRID if self.threshold is None else (float(self.threshold),)
        best, best_key = None, None
        rows = np.arange(ids.size)
        per_subset: dict[tuple[int, ...], np.ndarray] = {}
        for thr in grid:
            hit = p > thr
            for size in range(k_early + 1):
                for subset in combinations(range(k_early), size):
                    if subset not in per_subset:
                        per_subset[subset] = self._latency(c, subset)
                    cs = per_subset[subset]
                    mask = np.zeros((ids.size, trace.n_exits), dtype=bool)
                    mask[:, list(subset)] = hit[:, list(subset)]
                    mask[:, -1] = True
                    exits = mask.argmax(axis=1)
                    acc = float(correct[rows, exits].mean())
                    lat = float(np.where(exits < k_early, cs[exits] + lookup[exits], cs[-1]).mean())
                    ok = acc >= self.accuracy_target - 1e-12
                    key = (ok, -lat if ok else acc, acc if ok else -lat)
                    if best_key is None or key > best_key:
                        best_key, best = key, (thr, subset, acc, lat)
        thr, subset, acc, lat = best
        self.placed_ms_ = per_subset[subset]
        self.threshold_ = float(thr)
        self.exits_ = list(subset)
        self.thresholds_ = np.full(k_early, np.inf)
        self.thresholds_[list(subset)] = np.nextafter(thr, np.inf)  # hit iff P > threshold
        self.active_exits_ = np.isfinite(np.r_[self.thresholds_, 0.0])  # heads Gati consults
        self.feasible_ = bool(best_key[0])
        self.val_accuracy_, self.expected_latency_ms_ = acc, lat
        self.__dict__.pop("_score_cache", None)
        return super().fit(trace, split)

    def _latency(self, costs: np.ndarray, subset: tuple[int, ...]) -> np.ndarray:
        """T_S(k) per exit with the early exits ``subset`` consulted."""
        if self.subset_costs is None:
            return costs
        k_exits = costs.size
        return np.asarray(self.subset_costs(tuple(j in subset for j in range(k_exits - 1))
                                            + (True,)), dtype=float)

    def _compute_scores(self, trace: ExitTrace) -> np.ndarray:
        return self._selector_probs(trace, np.arange(trace.n_samples))

    def fitted_params(self) -> dict[str, Any]:
        return {"exits": self.exits_, "threshold": self.threshold_, "feasible": self.feasible_,
                "val_accuracy": self.val_accuracy_,
                "expected_latency_ms": self.expected_latency_ms_,
                "placed_ms": [None if np.isnan(x) else float(x) for x in self.placed_ms_]}
