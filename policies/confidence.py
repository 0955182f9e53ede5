"""Confidence-threshold policies: max softmax probability (MSDNet) and entropy (BranchyNet)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from offramp.common.errors import InputError
from offramp.traces.format import ExitTrace, require_entropy

from .base import ExitPolicy
from .thresholds import from_fractions, from_tolerance


class ConfidencePolicy(ExitPolicy):
    """Exit at the first k where confidence_k >= threshold_k.

    Give exactly one of ``thresholds`` (K-1 values, in the policy's own units), ``fractions``
    (K target exit fractions, fitted on val) or ``tolerance_pct`` (PAME's τ, fitted on val).
    ``exits``: the early exits consulted (default all); the others never take a sample and the
    server skips their heads (with ``thresholds`` or ``tolerance_pct``).
    """

    def __init__(self, thresholds: Sequence[float] | None = None,
                 fractions: Sequence[float] | None = None, tolerance_pct: float | None = None,
                 exits: Sequence[int] | None = None):
        self.thresholds = thresholds
        self.fractions = fractions
        self.tolerance_pct = tolerance_pct
        self.exits = exits

    def confidence(self, trace: ExitTrace) -> np.ndarray:
        """(N, K) score where higher means more confident."""
        raise NotImplementedError

    def _to_conf(self, t: np.ndarray) -> np.ndarray:
        """Thresholds in the policy's units -> confidence units (identity unless overridden)."""
        return t

    def fit(self, trace: ExitTrace, split: str = "val") -> ConfidencePolicy:
        given = [x is not None for x in (self.thresholds, self.fractions, self.tolerance_pct)]
        if sum(given) != 1:
            raise InputError("policy", self.name, "give exactly one of thresholds, fractions, "
                             "tolerance_pct", "set one way to choose the thresholds")
        k_exits = trace.n_exits
        enabled = self._enabled(k_exits)
        if self.thresholds is not None:
            t = np.asarray(self.thresholds, dtype=float)
            if t.shape != (k_exits - 1,):
                raise InputError("policy", "thresholds", f"need {k_exits - 1} thresholds (one per "
                                 f"early exit), got {len(t)}", "list one threshold per early exit")
            self.conf_thresholds_ = self._to_conf(t)
        else:
            ids = trace.indices(split)
            conf = self.confidence(trace)[ids]
            if self.fractions is not None:
                self.conf_thresholds_ = from_fractions(conf, self.fractions)
            else:
                self.conf_thresholds_ = from_tolerance(conf, trace.correct[ids],
                                                       float(self.tolerance_pct), enabled)
        self.conf_thresholds_ = np.where(enabled, self.conf_thresholds_, np.inf)
        self.active_exits_ = np.r_[enabled, True]
        self.thresholds_ = self._to_conf(self.conf_thresholds_)
        return super().fit(trace, split)

    def _enabled(self, k_exits: int) -> np.ndarray:
        """(K-1,) bool: the early exits ``exits`` names (all without it), checked."""
        if self.exits is None:
            return np.ones(k_exits - 1, dtype=bool)
        bad = [e for e in self.exits if not 0 <= int(e) < k_exits - 1]
        if bad or len(set(self.exits)) != len(self.exits):
            raise InputError("policy", "exits", f"{list(self.exits)} must name distinct early "
                             f"exits among 0..{k_exits - 2}", "list each early exit once")
        if self.fractions is not None:
            raise InputError("policy", "exits", "fractions already say where samples leave",
                             "use exits with tolerance_pct or thresholds")
        return np.isin(np.arange(k_exits - 1), np.asarray(self.exits, dtype=int))

    def exit_mask(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        conf = self.confidence(trace)[samples]
        mask = np.zeros(conf.shape, dtype=bool)
        mask[:, :-1] = conf[:, :-1] >= self.conf_thresholds_[None, :]
        return mask

    def fitted_params(self) -> dict[str, Any]:
        # The fitted thresholds replace however they were chosen.
        return {"thresholds": self.thresholds_, "fractions": None, "tolerance_pct": None}


class MaxProb(ConfidencePolicy):
    """Exit when the max softmax probability reaches the exit's threshold (MSDNet)."""

    name = "maxprob"

    def confidence(self, trace: ExitTrace) -> np.ndarray:
        return trace.maxprob


class Entropy(ConfidencePolicy):
    """Exit when the normalised entropy falls to the exit's threshold or below (BranchyNet)."""

    name = "entropy"

    def confidence(self, trace: ExitTrace) -> np.ndarray:
        require_entropy(trace, "entropy exits")
        return 1.0 - trace.entropy

    def _to_conf(self, t: np.ndarray) -> np.ndarray:
        # Entropy threshold h <-> confidence 1 - h (its own inverse; inf <-> -inf: never exit).
        return 1.0 - np.asarray(t, dtype=float)
