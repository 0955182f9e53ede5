"""Policies that exit where a learned per-exit score reaches its threshold (EENet, Gati,
safe-exit)."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from offramp.traces.format import ExitTrace

from .base import ExitPolicy


class LearnedScorePolicy(ExitPolicy):
    """Exit at the first k whose learned score reaches ``thresholds_[k]``; scores cached per trace."""

    def _compute_scores(self, trace: ExitTrace) -> np.ndarray:
        raise NotImplementedError

    def scores(self, trace: ExitTrace) -> np.ndarray:
        """(N, K) learned scores of every sample of the trace."""
        cache = self.__dict__.setdefault("_score_cache", weakref.WeakKeyDictionary())
        if trace not in cache:
            cache[trace] = self._compute_scores(trace)
        return cache[trace]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_score_cache"}

    def exit_mask(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        s = self.scores(trace)[samples]
        mask = np.zeros(s.shape, dtype=bool)
        mask[:, :-1] = s[:, :-1] >= self.thresholds_[None, :]
        return mask
