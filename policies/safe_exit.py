"""``safe-exit``: exit where a learned scorer says leaving now gives the full model's answer.

Confidence heuristics (max-prob, entropy) and EENet's scorers ask "is this exit right?". That
keeps hopeless samples (wrong at every exit) running to the last exit, where they spend budget
for nothing. ``safe-exit`` asks instead "does this exit agree with what continuing would give?"
(its prediction equals the last exit's): a sample the whole network gets wrong the same way is
safe to let go early.

Per early exit k, a gradient-boosted classifier (scikit-learn's
``HistGradientBoostingClassifier``) on the exit's softmax vector and, for every exit j ≤ k,
max-prob, normalised entropy and top-1 − top-2 margin, plus whether each earlier exit's
prediction equals exit k's, predicts P(exit k agrees with the last exit), trained on the val
split. The scores on val are **cross-fitted** (each val sample scored by the models of the
``folds`` − 1 folds that did not see it); every other sample by the mean of the fold models.
One threshold t on that probability for every exit: a sample leaves at the first exit whose
P(agree) ≥ t. t is fitted on the cross-fitted val scores, either

- ``budget_ms``: the most accurate t whose val average per-sample cost stays within the budget
  (never above it; among equally accurate ones the cheapest), or
- ``tolerance_pct``: the cheapest t whose val accuracy keeps τ % of the full model's.

``target: gain`` trains the scorers on "continuing would not fix it" instead (not: wrong at
exit k and right at the last exit): a sample also leaves where it is right now and the last
exit would be wrong, or where it is wrong everywhere though the exits disagree. It needs the
labels (correctness), as EENet's targets do; agreement needs none.

No seed system has it; docs/policies.md says where it comes from.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from offramp.common.errors import InputError
from offramp.traces.format import ExitTrace, has_entropy

from .budget import budget_costs
from .configs import PolicyConfigBase, Tunable
from .learned import LearnedScorePolicy
from .table import trace_fingerprint

GRID_POINTS = 2001  # candidate thresholds: quantiles of the val scores


class Target(StrEnum):
    """What safe-exit's scorers learn to predict (module docstring)."""

    AGREEMENT = "agreement"  # exit k's prediction equals the last exit's
    GAIN = "gain"            # continuing would not make a wrong answer right

    def labels(self, trace: ExitTrace, ids: np.ndarray) -> np.ndarray:
        """(len(ids), K−1) booleans: leaving at each early exit is safe."""
        if self is Target.AGREEMENT:
            return trace.agree[ids]
        ok = trace.correct[ids]
        return ~(~ok[:, :-1] & ok[:, -1:])


class SafeExitConfig(PolicyConfigBase):
    """``safe-exit``: learned P(exit agrees with the full model), one threshold on it."""

    tunable: ClassVar[dict[str, Tunable]] = {"tolerance_pct": Tunable(low=90.0, high=100.0)}
    name: Literal["safe-exit"] = "safe-exit"
    budget_ms: float | None = Field(None, gt=0, description="average cost per sample, ms "
                                    "(needs a latency profile)")
    tolerance_pct: float | None = Field(None, gt=0, le=100, description="or: keep τ % of the "
                                        "full model's val accuracy, at the least cost")
    cost_batch: int = Field(1, ge=1, description="batch size the per-sample exit costs are taken at")
    target: Target = Field(Target.AGREEMENT, strict=False, description="agreement (with the "
                           "last exit) | gain (continuing would not fix it)")
    folds: int = Field(5, ge=2, le=20, description="cross-fitting folds on val")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the folds and the boosting")

    @model_validator(mode="after")
    def _exactly_one(self) -> SafeExitConfig:
        if (self.budget_ms is None) == (self.tolerance_pct is None):
            raise ValueError("needs budget_ms or tolerance_pct, exactly one (e.g. "
                             "tolerance_pct: 99)")
        return self


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


class _Constant:
    """A 'classifier' for a fold whose targets are all one class."""

    def __init__(self, p: float):
        self.p = p

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.column_stack([np.full(len(x), 1 - self.p), np.full(len(x), self.p)])


def exits_at(prefix_max: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(T, N) exit index of every sample at each threshold in ``t``: the first early exit
    whose running maximum of scores reaches t, else the last exit (K−1 = number of early exits)."""
    return (prefix_max[None, :, :] < t[:, None, None]).sum(axis=2)


class SafeExit(LearnedScorePolicy):
    """Exit at the first exit whose learned P(agree with the last exit) ≥ the fitted threshold."""

    name = "safe-exit"

    def __init__(self, budget_ms: float | None = None, tolerance_pct: float | None = None,
                 costs: Sequence[float] | None = None, folds: int = 5, seed: int = 0,
                 max_iter: int = 150, learning_rate: float = 0.05, max_leaf_nodes: int = 15,
                 target: Target | str = Target.AGREEMENT):
        self.target = Target(target)
        self.budget_ms = budget_ms
        self.tolerance_pct = tolerance_pct
        self.costs = costs
        self.folds = folds
        self.seed = seed
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes

    def _classifier(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes, l2_regularization=1.0, early_stopping=False,
            random_state=self.seed)

    def _check(self, trace: ExitTrace) -> np.ndarray | None:
        if (self.budget_ms is None) == (self.tolerance_pct is None):
            raise InputError("policy", self.name, "give exactly one of budget_ms, tolerance_pct",
                             "e.g. tolerance_pct: 99")
        if trace.n_exits < 2:
            raise InputError(trace.source, "pred", "safe-exit needs at least two exits",
                             "use a multi-exit trace")
        if self.budget_ms is None:
            return None
        if self.costs is None:
            raise InputError("policy", "budget_ms", "a budget needs per-exit costs",
                             "build the policy with a latency profile (policies.build_policy)")
        return budget_costs(self.costs, trace.n_exits, self.budget_ms)

    def fit(self, trace: ExitTrace, split: str = "val") -> SafeExit:
        from threadpoolctl import threadpool_limits

        # One OpenMP thread: the boosting's threads spin-wait against any other work on a
        # small machine (a 2-core box: 44 s instead of 2 s for one fit), and the frontier
        # already runs fits side by side.
        with threadpool_limits(limits=1, user_api="openmp"):
            return self._fit(trace, split)

    def _fit(self, trace: ExitTrace, split: str) -> SafeExit:
        from sklearn.model_selection import KFold

        c = self._check(trace)
        ids = trace.indices(split)
        if ids.size < 2 * self.folds:
            raise InputError(trace.source, split, f"{ids.size} {split} samples are too few for "
                             f"{self.folds} folds", "use fewer folds or a larger split")
        agree = self.target.labels(trace, ids)
        kfold = KFold(n_splits=self.folds, shuffle=True, random_state=self.seed)
        splits = list(kfold.split(ids))
        oof = np.zeros((ids.size, trace.n_exits - 1))
        self.models_: list[list[Any]] = []
        for k in range(trace.n_exits - 1):
            x, y = safe_features(trace, k, ids), agree[:, k]
            models = []
            for train, hold in splits:
                yt = y[train]
                model = (_Constant(float(yt[0])) if yt.all() or not yt.any()
                         else self._classifier().fit(x[train], yt))
                oof[hold, k] = model.predict_proba(x[hold])[:, 1]
                models.append(model)
            self.models_.append(models)
        self.fit_ids_, self.oof_ = ids, oof
        self.fit_fingerprint_ = trace_fingerprint(trace)
        self._choose_threshold(trace.correct[ids], c)
        self.__dict__.pop("_score_cache", None)
        return super().fit(trace, split)

    def _scorer(self) -> tuple:
        """What the scorer depends on (the budget or tolerance only moves the threshold)."""
        return (self.folds, self.seed, self.max_iter, self.learning_rate, self.max_leaf_nodes,
                self.target)

    @classmethod
    def fit_together(cls, policies: Sequence[SafeExit], trace: ExitTrace, split: str = "val"
                     ) -> list[SafeExit]:
        """Fit safe-exit policies that differ in their budget or tolerance: those with the
        same scorer settings share one scorer (trained once; its scores computed once per
        trace) and each fits its own threshold. The same policies as one by one."""
        first: dict[tuple, SafeExit] = {}
        for pol in policies:
            done = first.get(pol._scorer())
            if done is None:
                first[pol._scorer()] = pol.fit(trace, split)
                continue
            c = pol._check(trace)
            pol.models_, pol.fit_ids_, pol.oof_ = done.models_, done.fit_ids_, done.oof_
            pol.fit_fingerprint_ = done.fit_fingerprint_
            pol._choose_threshold(trace.correct[done.fit_ids_], c)
            pol.__dict__["_score_cache"] = done.__dict__.setdefault("_score_cache",
                                                                   weakref.WeakKeyDictionary())
            super(SafeExit, pol).fit(trace, split)
        return list(policies)

    def _choose_threshold(self, correct: np.ndarray, c: np.ndarray | None) -> None:
        """The threshold on the cross-fitted val scores (the rule in the module docstring)."""
        prefix = np.maximum.accumulate(self.oof_, axis=1)
        # Thresholds midway between neighbouring score levels: a test sample scored a hair
        # apart from its val twin (fold mean against cross-fitted score) falls on the same side.
        q = np.unique(np.quantile(prefix, np.linspace(0, 1, GRID_POINTS)))
        grid = np.r_[q[0], (q[:-1] + q[1:]) / 2, np.inf]
        exits = exits_at(prefix, grid)
        rows = np.arange(correct.shape[0])
        acc = correct[rows[None, :], exits].mean(axis=1)
        if c is not None:
            cost = c[exits].mean(axis=1)
            ok = cost <= self.budget_ms + 1e-12
            if not ok.any():
                ok = cost <= cost.min()
            idx = np.flatnonzero(ok)  # ties go to the smallest t: as accurate, cheaper
            best = idx[np.argmax(acc[idx])]
            self.val_cost_ms_ = float(cost[best])
        else:
            target = correct[:, -1].mean() * float(self.tolerance_pct) / 100.0
            ok = acc >= target - 1e-12
            best = np.flatnonzero(ok)[0]  # the smallest t: the most exits, the least cost
            self.val_cost_ms_ = None
        self.threshold_ = float(grid[best])
        self.val_accuracy_ = float(acc[best])
        self.thresholds_ = np.full(self.oof_.shape[1], self.threshold_)

    def _compute_scores(self, trace: ExitTrace) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="openmp"):
            return self._scores_all(trace)

    def _scores_all(self, trace: ExitTrace) -> np.ndarray:
        rows = np.arange(trace.n_samples)
        out = np.ones((trace.n_samples, trace.n_exits))
        for k, models in enumerate(self.models_):
            x = safe_features(trace, k, rows)
            out[:, k] = np.mean([m.predict_proba(x)[:, 1] for m in models], axis=0)
        # Only the trace it was fitted on (not another with the same split layout).
        if trace_fingerprint(trace) == self.fit_fingerprint_:
            out[self.fit_ids_, :-1] = self.oof_  # the fitting split keeps its cross-fitted scores
        return out

    def fitted_params(self) -> dict[str, Any]:
        return {"threshold": self.threshold_, "val_accuracy": self.val_accuracy_,
                "val_cost_ms": self.val_cost_ms_}

    def explain(self) -> str | None:
        if not hasattr(self, "threshold_"):
            return None
        how = (f"the most accurate within the {self.budget_ms:.4g} ms budget (val cost "
               f"{self.val_cost_ms_:.4g} ms)" if self.budget_ms is not None else
               f"the cheapest keeping {self.tolerance_pct:g} % of the full model's val accuracy")
        return (f"exit where P(same answer as the full model) ≥ {self.threshold_:.4f}: {how}; "
                f"val accuracy {self.val_accuracy_:.4f} on {self.folds}-fold cross-fitted scores")
