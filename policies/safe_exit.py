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

What the scorers learn is the ``target``: ``agreement`` (above); ``gain``, "continuing would
not fix it" (not: wrong at exit k and right at the last exit): a sample also leaves where it
is right now and the last exit would be wrong, or where it is wrong everywhere though the exits
disagree; ``next-gain``, "the next exit would not fix it" (not: wrong at k and right at k + 1):
under a tight budget a sample that goes on mostly stops at the next exit, so that is the gain
its budget buys. The two gains need the labels (correctness), as EENet's targets do; agreement
needs none. ``auto`` (the default) trains a scorer for each and keeps, per policy, the one
its threshold rule prefers on the cross-fitted val scores (:meth:`SafeExit._keep`;
``chosen_target`` in the fitted parameters).

No seed system has it; docs/policies.md says where it comes from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from offramp.common.errors import InputError
from offramp.traces.format import ExitTrace

from .budget import budget_costs
from .configs import PolicyConfigBase, Tunable
from .costs import check_costs
from .learned import LearnedScorePolicy
from .safe_scorer import LEARNED_TARGETS, Scorer, Target, train_scorer

GRID_POINTS = 2001  # candidate thresholds: quantiles of the val scores


class SafeExitConfig(PolicyConfigBase):
    """``safe-exit``: a learned P(leaving at the exit is safe), one threshold on it."""

    tunable: ClassVar[dict[str, Tunable]] = {"tolerance_pct": Tunable(low=90.0, high=100.0)}
    name: Literal["safe-exit"] = "safe-exit"
    budget_ms: float | None = Field(None, gt=0, description="average cost per sample, ms "
                                    "(needs a latency profile)")
    tolerance_pct: float | None = Field(None, gt=0, le=100, description="or: keep τ % of the "
                                        "full model's val accuracy, at the least cost")
    cost_batch: int = Field(1, ge=1, description="batch size the per-sample exit costs are taken at")
    target: Target = Field(Target.AUTO, strict=False, description="auto (each target below, "
                           "the one chosen on val kept) | agreement (with the last exit) | "
                           "gain (continuing would not fix it) | next-gain (the next exit "
                           "would not)")
    folds: int = Field(5, ge=2, le=20, description="cross-fitting folds on val")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the folds and the boosting")

    @model_validator(mode="after")
    def _exactly_one(self) -> SafeExitConfig:
        if (self.budget_ms is None) == (self.tolerance_pct is None):
            raise ValueError("needs budget_ms or tolerance_pct, exactly one (e.g. "
                             "tolerance_pct: 99)")
        return self


def exits_at(prefix_max: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(T, N) exit index of every sample at each threshold in ``t``: the first early exit
    whose running maximum of scores reaches t, else the last exit (K−1 = number of early exits)."""
    return (prefix_max[None, :, :] < t[:, None, None]).sum(axis=2)


class SafeExit(LearnedScorePolicy):
    """Exit at the first exit whose learned P(safe) ≥ the fitted threshold (module docstring)."""

    name = "safe-exit"

    def __init__(self, budget_ms: float | None = None, tolerance_pct: float | None = None,
                 costs: Sequence[float] | None = None, folds: int = 5, seed: int = 0,
                 max_iter: int = 150, learning_rate: float = 0.05, max_leaf_nodes: int = 15,
                 target: Target | str = Target.AUTO):
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
        return self.fit_together([self], trace, split)[0]

    def _ids(self, trace: ExitTrace, split: str) -> np.ndarray:
        ids = trace.indices(split)
        if ids.size < 2 * self.folds:
            raise InputError(trace.source, split, f"{ids.size} {split} samples are too few for "
                             f"{self.folds} folds", "use fewer folds or a larger split")
        return ids

    def _train(self, trace: ExitTrace, ids: np.ndarray, target: Target) -> Scorer:
        return train_scorer(trace, ids, target, self.folds, self.seed, self._classifier)

    def _keep(self, scorers: dict[Target, Scorer], trace: ExitTrace, split: str,
              c: np.ndarray | None) -> SafeExit:
        """Fit the threshold on each candidate scorer's cross-fitted val scores and keep the
        one the threshold rule itself prefers (the one home of ``auto``'s choice): under a
        budget the most accurate, then the cheapest; under a tolerance the cheapest (the
        per-exit costs if given, else the mean exit index), then the most accurate; a full tie
        goes to the first in :data:`LEARNED_TARGETS`' order."""
        fits = [(scorers[t], self._threshold(trace.correct[scorers[t].ids], scorers[t].oof, c))
                for t in self.target.candidates]
        better = ((lambda f: (f[1][1], -f[1][3])) if c is not None
                  else (lambda f: (-f[1][3], f[1][1])))
        scorer, (t, acc, cost, _) = max(fits, key=better)  # max keeps the first of a tie
        self.scorer_, self.threshold_, self.val_accuracy_, self.val_cost_ms_ = scorer, t, acc, cost
        self.thresholds_ = np.full(scorer.oof.shape[1], t)
        self.__dict__["_score_cache"] = scorer.cache
        return super().fit(trace, split)

    def _scorer(self) -> tuple:
        """What a scorer depends on (the budget or tolerance only moves the threshold)."""
        return (self.folds, self.seed, self.max_iter, self.learning_rate, self.max_leaf_nodes)

    @classmethod
    def fit_together(cls, policies: Sequence[SafeExit], trace: ExitTrace, split: str = "val"
                     ) -> list[SafeExit]:
        """Fit safe-exit policies that differ in their budget, tolerance or target: those with
        the same scorer settings share each target's scorer (trained once; its scores computed
        once per trace) and each fits its own threshold. The same policies as one by one."""
        from threadpoolctl import threadpool_limits

        trained: dict[tuple, dict[Target, Scorer]] = {}
        # One OpenMP thread: the boosting's threads spin-wait against any other work on a
        # small machine (a 2-core box: 44 s instead of 2 s for one fit), and the frontier
        # already runs fits side by side.
        with threadpool_limits(limits=1, user_api="openmp"):
            for pol in policies:
                c, ids = pol._check(trace), pol._ids(trace, split)
                have = trained.setdefault(pol._scorer(), {})
                for t in pol.target.candidates:
                    if t not in have:
                        have[t] = pol._train(trace, ids, t)
                pol._keep(have, trace, split, c)
        return list(policies)

    def _threshold(self, correct: np.ndarray, oof: np.ndarray, c: np.ndarray | None
                   ) -> tuple[float, float, float | None, float]:
        """(threshold, val accuracy, val cost under a budget else None, val spend: the cost,
        or under a tolerance the per-exit costs' mean if given, else the mean exit index) on
        cross-fitted val scores ``oof`` (the rule in the module docstring)."""
        prefix = np.maximum.accumulate(oof, axis=1)
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
            return float(grid[best]), float(acc[best]), float(cost[best]), float(cost[best])
        target = correct[:, -1].mean() * float(self.tolerance_pct) / 100.0
        best = np.flatnonzero(acc >= target - 1e-12)[0]  # the smallest t: the least cost
        per_exit = (np.arange(correct.shape[1], dtype=float) if self.costs is None
                    else check_costs(self.costs, correct.shape[1]))
        return float(grid[best]), float(acc[best]), None, float(per_exit[exits[best]].mean())

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled (a pool worker): scores cached on the scorer again, so policies sent
        together that share a scorer compute its scores once there too."""
        self.__dict__.update(state)
        if "scorer_" in state:
            self.__dict__["_score_cache"] = self.scorer_.cache

    def _compute_scores(self, trace: ExitTrace) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="openmp"):
            return self._scores_all(trace)

    def _scores_all(self, trace: ExitTrace) -> np.ndarray:
        return self.scorer_.scores(trace)

    def fitted_params(self) -> dict[str, Any]:
        return {"threshold": self.threshold_, "val_accuracy": self.val_accuracy_,
                "val_cost_ms": self.val_cost_ms_, "chosen_target": self.scorer_.target.value}

    def explain(self) -> str | None:
        if not hasattr(self, "threshold_"):
            return None
        how = (f"the most accurate within the {self.budget_ms:.4g} ms budget (val cost "
               f"{self.val_cost_ms_:.4g} ms)" if self.budget_ms is not None else
               f"the cheapest keeping {self.tolerance_pct:g} % of the full model's val accuracy")
        chosen = self.scorer_.target
        why = (f" (its target chosen on val among {', '.join(LEARNED_TARGETS)})"
               if self.target is Target.AUTO else "")
        return (f"exit where P({chosen.meaning}) ≥ {self.threshold_:.4f}{why}: {how}; "
                f"val accuracy {self.val_accuracy_:.4f} on {self.folds}-fold cross-fitted scores")
