"""The budgeted oracle LP bounds every policy at that policy's own test cost."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offramp.policies.baselines import NoExit, StaticExit
from offramp.policies.confidence import Entropy, MaxProb
from offramp.policies.costs import evaluate, exit_costs
from offramp.policies.eenet import EENet, exp_fractions
from offramp.policies.gati import Gati
from offramp.policies.oracle_lp import BudgetedOracle, oracle_bound
from offramp.policies.pame import PAME
from offramp.policies.patience import Patience
from offramp.profiling.synthetic import synthetic_profile
from offramp.traces.synthetic import synthetic_trace

TRACE = synthetic_trace(1500, seed=7)
PROFILE = synthetic_profile()
COSTS = exit_costs(PROFILE)


@pytest.fixture(scope="module")
def learned():
    """The slower policies, fitted once."""
    return [EENet(2.4, COSTS, n_fits=1, epochs=60).fit(TRACE),
            Gati(0.8, COSTS, threshold=None).fit(TRACE),
            PAME(97, PROFILE, max_batch=16).fit(TRACE),
            BudgetedOracle(2.0, COSTS).fit(TRACE)]


def test_oracle_bound_dominates_learned_policies(learned):
    for pol in learned:
        acc, cost = evaluate(pol, TRACE, COSTS, "test")
        assert oracle_bound(TRACE, COSTS, cost) >= acc - 1e-7, pol.name


policy_strategy = st.one_of(
    st.builds(lambda k: StaticExit(k), st.integers(0, 3)),
    st.just(NoExit()),
    st.builds(lambda t: MaxProb(tolerance_pct=t), st.floats(80, 100)),
    st.builds(lambda t: Entropy(tolerance_pct=t), st.floats(80, 100)),
    st.builds(lambda w: MaxProb(fractions=np.asarray(w) / np.sum(w)),
              st.lists(st.floats(0.01, 1.0), min_size=4, max_size=4)),
    st.builds(lambda b: Entropy(fractions=exp_fractions(COSTS, b)), st.floats(1.1, 4.2)),
    st.builds(lambda t: Patience(t), st.integers(1, 3)),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policy_strategy)
def test_oracle_bound_dominates_every_policy(policy):
    acc, cost = evaluate(policy.fit(TRACE), TRACE, COSTS, "test")
    assert oracle_bound(TRACE, COSTS, cost) >= acc - 1e-7
