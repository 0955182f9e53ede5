"""Fitting per-exit confidence thresholds on the val split.

Two rules. ``from_fractions``: EENet's sequential top-n calibration, exit k takes the n_k most
confident samples still active. ``from_tolerance``: PAME's precision-aware rule, each exit takes
as many samples as it can while the mixed accuracy (exited samples scored by this exit, the rest
by the full model) stays at or above a conditional target derived from τ % of the full model's
accuracy. Thresholds are on a confidence score where higher means more confident; ``inf``
means the exit never fires.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from offramp.common.errors import InputError


def from_fractions(conf: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Thresholds (K-1,) so that exit k takes about ``fractions[k]`` of the samples.

    ``conf`` is (N, K) confidence on the fitting split; ``fractions`` has K entries summing to 1
    (the last exit takes what is left). Ties at a threshold all exit.
    """
    n, k_exits = conf.shape
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (k_exits,) or (fr < 0).any() or abs(fr.sum() - 1) > 1e-6:
        raise InputError("policy", "fractions", f"need {k_exits} non-negative fractions summing "
                         f"to 1, got {list(fractions)}", "fix the target exit fractions")
    active = np.ones(n, dtype=bool)
    thresholds = np.full(k_exits - 1, np.inf)
    for k in range(k_exits - 1):
        take = int(np.floor(fr[k] * n))
        scores = conf[active, k]
        if take <= 0 or scores.size == 0:
            continue
        take = min(take, scores.size)
        thresholds[k] = np.sort(scores)[::-1][take - 1]
        active &= ~(conf[:, k] >= thresholds[k])
    return thresholds


def from_tolerance(conf: np.ndarray, correct: np.ndarray, tolerance_pct: float,
                   enabled: np.ndarray | None = None) -> np.ndarray:
    """PAME's precision-aware thresholds (K-1,) for a relative tolerance τ (percent);
    ``enabled`` (K-1 bools): the early exits that may take samples (the others keep an infinite
    threshold and pass their whole share of the tolerance on).

    ``correct`` is (N, K) on the fitting split. The mixed accuracy over all samples stays
    >= A·τ/100, A the last exit's accuracy. Exit by exit, the threshold admitting the most
    exits whose mixed accuracy on the samples still active meets the conditional target
    ``T ← (T − a_i·(1 − r_i)) / r_i`` is chosen (a_i: accuracy of the exited, r_i: move-on ratio).
    """
    if not 0 < tolerance_pct <= 100:
        raise InputError("policy", "tolerance_pct", f"must be in (0, 100], got {tolerance_pct}",
                         "use e.g. 99 for a 1% relative accuracy drop")
    n, k_exits = conf.shape
    last = correct[:, -1].astype(float)
    target = last.mean() * tolerance_pct / 100.0
    active = np.ones(n, dtype=bool)
    thresholds = np.full(k_exits - 1, np.inf)
    for k in range(k_exits - 1):
        if enabled is not None and not enabled[k]:
            continue
        idx = np.flatnonzero(active)
        m = idx.size
        if m == 0:
            break
        order = np.argsort(-conf[idx, k], kind="stable")
        s = conf[idx, k][order]
        here = np.concatenate([[0.0], np.cumsum(correct[idx, k][order])])
        moved = np.concatenate([[0.0], np.cumsum(last[idx][order])])
        taken = np.arange(m + 1)
        # Mixed accuracy if the top-t exit here and the rest use the full model.
        mixed = (here + (moved[-1] - moved)) / m
        # Only cut between distinct scores (a threshold takes whole tie groups).
        valid = np.ones(m + 1, dtype=bool)
        valid[1:m] = s[:-1] != s[1:]
        ok = valid & (mixed >= target - 1e-12)
        ok[0] = True
        t = int(taken[ok].max())
        if t == 0:
            continue
        thresholds[k] = s[t - 1]
        exited = idx[order[:t]]
        pass_acc = correct[exited, k].mean()
        r = (m - t) / m
        active[exited] = False
        if r == 0:
            break
        target = (target - pass_acc * (1 - r)) / r
    return thresholds
