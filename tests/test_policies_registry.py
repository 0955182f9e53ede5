"""Every policy by name: make_policy for the simple ones, build_policy (fitted) for all."""

from __future__ import annotations

import json

import numpy as np
import pytest

from offramp.policies import POLICIES, PolicyConfig, build_policy, make_policy
from offramp.policies.costs import evaluate, exit_costs
from offramp.profiling.latency import LatencyModel
from offramp.profiling.synthetic import synthetic_profile
from offramp.sim.config import ServerConfig
from offramp.traces.errors import InputError
from offramp.traces.synthetic import synthetic_trace

TRACE = synthetic_trace(1200, seed=5)
PROFILE = synthetic_profile()


def test_all_seed_policies_are_registered():
    assert set(POLICIES) >= {"none", "static", "maxprob", "entropy", "oracle", "patience",
                             "eenet", "pame", "gati", "dynamic-ofa"}


@pytest.mark.parametrize("cfg", [
    {"name": "none"}, {"name": "static:2"}, {"name": "oracle"},
    {"name": "maxprob", "tolerance_pct": 99}, {"name": "entropy", "fractions": [0.4, 0.3, 0.2, 0.1]},
    {"name": "patience", "patience": 2}, {"name": "patience", "tolerance_pct": 98},
    {"name": "dynamic-ofa", "levels": [{"name": "static:0"}, {"name": "none"}],
     "latency_target_ms": 5, "accuracy_target": 0.9},
])
def test_make_policy_builds_unfitted_simple_policies(cfg):
    pol = make_policy(PolicyConfig(**cfg))
    assert not hasattr(pol, "n_exits_")
    pol.fit(TRACE)
    json.dumps(pol.get_params())


@pytest.mark.parametrize("cfg", [
    {"name": "eenet", "budget_ms": 2.4, "n_fits": 1, "epochs": 30},
    {"name": "gati", "accuracy_target": 0.8, "selector_threshold": None},
    {"name": "pame", "tolerance_pct": 98},
    {"name": "maxprob", "budget_ms": 2.0}, {"name": "entropy", "budget_ms": 2.0, "cost_batch": 8},
    {"name": "oracle", "budget_ms": 2.0},
    {"name": "dynamic-ofa", "levels": [{"name": "maxprob", "budget_ms": 1.5},
                                       {"name": "eenet", "budget_ms": 2.5, "n_fits": 1,
                                        "epochs": 20}, {"name": "none"}],
     "latency_target_ms": 5, "accuracy_target": 0.9, "switch_cost_ms": 1.0},
])
def test_build_policy_fits_cost_aware_policies(cfg):
    config = PolicyConfig(**cfg)
    with pytest.raises(InputError, match="build_policy"):
        make_policy(config)
    server = ServerConfig(max_batch=16)
    pol = build_policy(config, TRACE, LatencyModel(PROFILE), server)
    assert pol.n_exits_ == TRACE.n_exits
    json.dumps(pol.get_params())
    if pol.is_static:
        pol.exit_index(TRACE, TRACE.indices("test"))


def test_budget_policies_meet_their_budget_on_val():
    costs = exit_costs(PROFILE)
    for name in ("maxprob", "entropy", "oracle"):
        pol = build_policy(PolicyConfig(name=name, budget_ms=2.0), TRACE, PROFILE)
        _, cost = evaluate(pol, TRACE, costs, "val")
        assert cost == pytest.approx(2.0, rel=0.05), name


def test_config_errors_are_clear():
    with pytest.raises(InputError, match="gati takes no tolerance_pct"):
        make_policy(PolicyConfig(name="gati", tolerance_pct=99))
    with pytest.raises(InputError, match="none takes no fitting options"):
        make_policy(PolicyConfig(name="none", tolerance_pct=99))
    with pytest.raises(InputError, match="eenet needs budget_ms"):
        build_policy(PolicyConfig(name="eenet"), TRACE, PROFILE)
    with pytest.raises(InputError, match="needs a measured latency profile"):
        build_policy(PolicyConfig(name="pame", tolerance_pct=99), TRACE, None)
    with pytest.raises(InputError, match="exactly one"):
        make_policy(PolicyConfig(name="maxprob", tolerance_pct=99, fractions=[1, 0, 0, 0]))
    with pytest.raises(InputError, match="dynamic-ofa needs latency_target_ms"):
        make_policy(PolicyConfig(name="dynamic-ofa", levels=[{"name": "none"}],
                                 accuracy_target=0.9))
    with pytest.raises(ValueError, match="extra"):
        PolicyConfig(name="eenet", budget=3)


def test_config_round_trips_through_a_dump():
    # analysis/ re-validates a dumped config: defaults in the dump must not count as "set".
    cfg = PolicyConfig(name="entropy", tolerance_pct=99)
    again = PolicyConfig.model_validate(cfg.model_dump())
    assert np.isfinite(make_policy(again).fit(TRACE).thresholds_).any()
