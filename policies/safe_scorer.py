"""safe-exit's scorers (policies/safe_exit.py): what they learn (:class:`Target`), the
features they read, and one target's cross-fitted fold models (:class:`Scorer`)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from offramp.traces.format import ExitTrace, has_entropy

from .table import trace_fingerprint


class Target(StrEnum):
    """What safe-exit's scorers learn to predict (module docstring)."""

    AGREEMENT = "agreement"  # exit k's prediction equals the last exit's
    GAIN = "gain"            # continuing to the last exit would not make a wrong answer right
    NEXT_GAIN = "next-gain"  # the next exit would not make a wrong answer right
    AUTO = "auto"            # a scorer for each of the above; one kept (SafeExit._keep)

    @property
    def meaning(self) -> str:
        """What the target's scorer estimates the probability of, in words."""
        return {"agreement": "same answer as the full model",
                "gain": "continuing would not fix it",
                "next-gain": "the next exit would not fix it"}[self.value]

    @property
    def candidates(self) -> tuple[Target, ...]:
        """The targets a fit trains scorers for (``auto``: every one, in this order)."""
        return LEARNED_TARGETS if self is Target.AUTO else (self,)

    def labels(self, trace: ExitTrace, ids: np.ndarray) -> np.ndarray:
        """(len(ids), K−1) booleans: leaving at each early exit is safe."""
        if self is Target.AGREEMENT:
            return trace.agree[ids]
        if self is Target.AUTO:
            raise ValueError("auto is a choice among targets, not a target")
        ok = trace.correct[ids]
        later = ok[:, -1:] if self is Target.GAIN else ok[:, 1:]
        return ~(~ok[:, :-1] & later)


LEARNED_TARGETS = (Target.AGREEMENT, Target.GAIN, Target.NEXT_GAIN)


def safe_features(trace: ExitTrace, k: int, rows: np.ndarray) -> np.ndarray:
    """(len(rows), F) features of exit k: its softmax; every exit j ≤ k's max-prob, entropy and
    margin; whether each earlier exit's prediction equals exit k's."""
    parts = []
    if trace.softmax is not None:
        sm = np.asarray(trace.softmax[rows, :k + 1], dtype=np.float64)
        parts.append(sm[:, k])
        top2 = np.sort(sm, axis=2)[:, :, -2:]
        parts.append(top2[:, :, 1] - top2[:, :, 0])
    parts.append(np.asarray(trace.maxprob[rows, :k + 1], dtype=np.float64))
    if has_entropy(trace):
        parts.append(np.asarray(trace.entropy[rows, :k + 1], dtype=np.float64))
    pred = trace.pred[rows]
    parts.append((pred[:, :k] == pred[:, k:k + 1]).astype(np.float64))
    return np.hstack(parts)


@dataclass(eq=False)
class Scorer:
    """One target's trained scorer: per early exit its fold models, the val samples it was
    fitted on, their cross-fitted scores (K−1 columns), the trace's fingerprint, and the
    scores computed per trace (shared by every policy that keeps this scorer)."""

    target: Target
    models: list[list[Any]]
    ids: np.ndarray
    oof: np.ndarray
    fingerprint: str
    cache: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)

    def scores(self, trace: ExitTrace) -> np.ndarray:
        """(N, K) scores of every sample (the last exit's 1): the mean of the fold models, but
        the fitting split's cross-fitted scores on the trace it was fitted on (not another with
        the same split layout)."""
        rows = np.arange(trace.n_samples)
        out = np.ones((trace.n_samples, trace.n_exits))
        for k, models in enumerate(self.models):
            x = safe_features(trace, k, rows)
            out[:, k] = np.mean([m.predict_proba(x)[:, 1] for m in models], axis=0)
        if trace_fingerprint(trace) == self.fingerprint:
            out[self.ids, :-1] = self.oof
        return out

    def __getstate__(self) -> dict[str, Any]:  # a process pool gets it without the cache
        return {k: v for k, v in self.__dict__.items() if k != "cache"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, cache=weakref.WeakKeyDictionary())


class Constant:
    """A 'classifier' for a fold whose targets are all one class."""

    def __init__(self, p: float):
        self.p = p

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.column_stack([np.full(len(x), 1 - self.p), np.full(len(x), self.p)])


def train_scorer(trace: ExitTrace, ids: np.ndarray, target: Target, folds: int, seed: int,
                 classifier: Callable[[], Any]) -> Scorer:
    """The fold models of every early exit for ``target`` (``folds`` shuffled folds of
    ``ids``, seeded) and their cross-fitted scores; ``classifier()`` makes one model."""
    from sklearn.model_selection import KFold

    labels = target.labels(trace, ids)
    splits = list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(ids))
    oof = np.zeros((ids.size, trace.n_exits - 1))
    models: list[list[Any]] = []
    for k in range(trace.n_exits - 1):
        x, y = safe_features(trace, k, ids), labels[:, k]
        per_fold = []
        for train, hold in splits:
            yt = y[train]
            model = (Constant(float(yt[0])) if yt.all() or not yt.any()
                     else classifier().fit(x[train], yt))
            oof[hold, k] = model.predict_proba(x[hold])[:, 1]
            per_fold.append(model)
        models.append(per_fold)
    return Scorer(target, models, ids, oof, trace_fingerprint(trace))
