"""The frontier's comparison tools: paired CIs and the agreement oracle (synthetic traces,
labelled so in their metadata)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from offramp.analysis.studies.frontier_compare import agreement_accuracy, paired_ci
from offramp.policies.oracle_lp import oracle_lp
from offramp.policies.safe_exit import SafeExit
from offramp.traces.synthetic import synthetic_trace

COSTS = [1.0, 2.0, 3.0, 4.0]


def test_paired_ci_of_identical_and_shifted_policies():
    a = np.random.default_rng(0).random(4000) < 0.8
    assert paired_ci(a, a) == (0.0, 0.0, 0.0)
    b = a.copy()
    b[:400] = ~b[:400]  # b differs from a on the first 400 samples only
    d, lo, hi = paired_ci(a, b)
    assert d == pytest.approx(a.mean() - b.mean())
    assert lo < d < hi and hi - lo < 0.03  # paired: only the 400 differing samples add noise


@pytest.mark.parametrize("seed", [0, 3])
def test_the_agreement_oracle_sits_between_exit_zero_and_the_oracle_bound(seed):
    trace = synthetic_trace(1500, n_exits=4, seed=seed)
    ids = trace.indices("test")
    first = float(trace.correct[ids, 0].mean())
    full = float(trace.correct[ids, -1].mean())
    last = -1.0
    for budget in (1.0, 1.5, 2.0, 3.0, 4.0):
        got = agreement_accuracy(trace, ids, COSTS, budget)
        assert first - 1e-9 <= got <= oracle_lp(trace.correct[ids], COSTS, budget).accuracy + 1e-9
        assert got >= last - 1e-9  # more budget never hurts it
        last = got
    assert last >= full - 1e-9  # with the whole budget it is at least the full model
    assert np.isnan(agreement_accuracy(trace, ids, COSTS, 0.5))


def test_safe_exit_keeps_its_cross_fitted_scores_for_its_own_trace_only():
    a = synthetic_trace(1200, n_exits=3, seed=0)
    b = dataclasses.replace(synthetic_trace(1200, n_exits=3, seed=1), split=a.split)
    policy = SafeExit(tolerance_pct=99, folds=3).fit(a)
    val = a.indices("val")
    np.testing.assert_array_equal(policy.scores(a)[val, :-1], policy.scorer_.oof)
    # Another trace with the same split layout is scored by the fold models, not given a's.
    fold_mean = policy._scores_all(dataclasses.replace(b, split=np.zeros_like(b.split) + 1))
    np.testing.assert_allclose(policy.scores(b)[val], fold_mean[val])
