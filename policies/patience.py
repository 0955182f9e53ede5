"""Patience-based early exit (PABEE): exit once the prediction has stopped changing.

As in PABEE, a counter of unchanged predictions grows by one at every exit whose prediction
equals the previous exit's and resets to 0 otherwise; a sample exits at the first exit where
the counter reaches ``patience`` = t, i.e. where exits k−t … k all predict the same class.
With ``tolerance_pct`` instead, t is fitted on val: the smallest t whose mixed accuracy keeps
τ % of the full model's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from offramp.common.errors import InputError
from offramp.traces.format import ExitTrace

from .base import ExitPolicy


def unchanged_counts(pred: np.ndarray) -> np.ndarray:
    """(N, K) PABEE counter: consecutive unchanged predictions up to and including exit k."""
    n, k_exits = pred.shape
    cnt = np.zeros((n, k_exits), dtype=np.int64)
    for k in range(1, k_exits):
        cnt[:, k] = np.where(pred[:, k] == pred[:, k - 1], cnt[:, k - 1] + 1, 0)
    return cnt


class Patience(ExitPolicy):
    """Exit when t consecutive exits left the prediction unchanged (give ``patience`` or
    ``tolerance_pct``)."""

    name = "patience"

    def __init__(self, patience: int | None = None, tolerance_pct: float | None = None):
        self.patience = patience
        self.tolerance_pct = tolerance_pct

    def fit(self, trace: ExitTrace, split: str = "val") -> Patience:
        if (self.patience is None) == (self.tolerance_pct is None):
            raise InputError("policy", "patience", "give exactly one of patience, tolerance_pct",
                             "set e.g. patience: 2")
        if self.patience is not None:
            if int(self.patience) != self.patience or self.patience < 1:
                raise InputError("policy", "patience", f"must be an integer >= 1, got "
                                 f"{self.patience}", "use e.g. patience: 2")
            if self.patience > trace.n_exits - 1:
                raise InputError("policy", "patience", f"{self.patience} unchanged predictions "
                                 f"never happen before the last of {trace.n_exits} exits",
                                 f"use at most {trace.n_exits - 1}")
            self.patience_ = int(self.patience)
            return super().fit(trace, split)
        if not 0 < self.tolerance_pct <= 100:
            raise InputError("policy", "tolerance_pct", f"must be in (0, 100], got "
                             f"{self.tolerance_pct}", "use e.g. 99 for a 1% relative drop")
        ids = trace.indices(split)
        cnt = unchanged_counts(trace.pred[ids])
        correct = trace.correct[ids]
        target = correct[:, -1].mean() * self.tolerance_pct / 100.0
        self.patience_ = trace.n_exits  # never fires early: the full model
        for t in range(1, trace.n_exits):
            exits = self._exits(cnt, t)
            if correct[np.arange(ids.size), exits].mean() >= target - 1e-12:
                self.patience_ = t
                break
        return super().fit(trace, split)

    @staticmethod
    def _exits(cnt: np.ndarray, t: int) -> np.ndarray:
        mask = cnt >= t
        mask[:, -1] = True
        return mask.argmax(axis=1)

    def exit_mask(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        return unchanged_counts(trace.pred[samples]) >= self.patience_

    def fitted_params(self) -> dict[str, Any]:
        return {"patience": self.patience_, "tolerance_pct": None}
