"""Every policy by name: make_policy for the simple ones, build_policy (fitted) for all."""

from __future__ import annotations

import json

import numpy as np
import pytest

from offramp.common.errors import InputError
from offramp.policies import POLICIES, build_policy, make_policy, parse_policy, policy_config
from offramp.policies.baselines import NoExit, Oracle, StaticExit
from offramp.policies.budget import exp_fractions
from offramp.policies.confidence import Entropy, MaxProb
from offramp.policies.costs import evaluate, exit_costs
from offramp.policies.eenet import EENet
from offramp.policies.gati import Gati
from offramp.policies.oracle_lp import BudgetedOracle
from offramp.policies.pame import PAME
from offramp.policies.patience import Patience
from offramp.profiling.latency import LatencyModel
from offramp.profiling.synthetic import synthetic_profile
from offramp.sim.config import ServerConfig
from offramp.traces.synthetic import synthetic_trace

TRACE = synthetic_trace(1200, seed=5)
PROFILE = synthetic_profile()


def test_all_seed_policies_are_registered():
    assert set(POLICIES) >= {"none", "static", "maxprob", "entropy", "oracle", "patience",
                             "eenet", "pame", "gati", "dynamic-ofa"}


TEST_IDS = TRACE.indices("test")
COSTS1, COSTS8 = exit_costs(PROFILE, 1), exit_costs(PROFILE, 8)


def same_exits(a, b) -> bool:
    return np.array_equal(a.exit_index(TRACE, TEST_IDS), b.exit_index(TRACE, TEST_IDS))


@pytest.mark.parametrize("cfg, direct", [
    ({"name": "none"}, lambda: NoExit()),
    ({"name": "static:2"}, lambda: StaticExit(2)),
    ({"name": "oracle"}, lambda: Oracle()),
    ({"name": "maxprob", "tolerance_pct": 99}, lambda: MaxProb(tolerance_pct=99)),
    ({"name": "entropy", "fractions": [0.4, 0.3, 0.2, 0.1]},
     lambda: Entropy(fractions=[0.4, 0.3, 0.2, 0.1])),
    ({"name": "entropy", "thresholds": [0.2, 0.3, 0.4]}, lambda: Entropy(thresholds=[0.2, 0.3, 0.4])),
    ({"name": "patience", "patience": 2}, lambda: Patience(2)),
    ({"name": "patience", "tolerance_pct": 98}, lambda: Patience(tolerance_pct=98)),
])
def test_make_policy_builds_the_named_policy_with_its_options(cfg, direct):
    pol = make_policy(parse_policy(cfg))
    assert not hasattr(pol, "n_exits_")
    want = direct()
    assert type(pol) is type(want) and pol.get_params() == want.get_params()
    pol.fit(TRACE)
    want.fit(TRACE)
    json.dumps(pol.get_params())
    assert same_exits(pol, want)


def test_make_policy_passes_every_dynamic_ofa_option():
    cfg = policy_config(name="dynamic-ofa", levels=[{"name": "static:0"}, {"name": "none"}],
                       latency_target_ms=5, accuracy_target=0.9, window=7, warmup=3, up_after=11,
                       switch_cost_ms=0.5, lock=False, hold_s=2.0)
    pol = make_policy(cfg)
    assert [type(lv) for lv in pol.levels] == [StaticExit, NoExit]
    assert (pol.latency_target_ms, pol.accuracy_target, pol.window, pol.warmup, pol.up_after,
            pol.switch_cost_ms, pol.lock, pol.hold_s) == (5, 0.9, 7, 3, 11, 0.5, False, 2.0)


@pytest.mark.parametrize("cfg, direct", [
    ({"name": "eenet", "budget_ms": 2.4, "n_fits": 1, "epochs": 30, "seed": 3},
     lambda: EENet(2.4, COSTS1, n_fits=1, epochs=30, seed=3)),
    ({"name": "gati", "accuracy_target": 0.8, "selector_threshold": None},
     lambda: Gati(0.8, COSTS1, threshold=None)),
    ({"name": "gati", "accuracy_target": 0.8, "cost_batch": 8, "lookup_ms": 0.1},
     lambda: Gati(0.8, COSTS8, lookup_ms=0.1)),
    ({"name": "pame", "tolerance_pct": 98, "tail_tolerance_pct": 20},
     lambda: PAME(98, PROFILE, 16, exit_mode="keep", tail_tolerance_pct=20)),
    ({"name": "maxprob", "budget_ms": 2.0},
     lambda: MaxProb(fractions=exp_fractions(COSTS1, 2.0))),
    ({"name": "entropy", "budget_ms": 0.5, "cost_batch": 8},
     lambda: Entropy(fractions=exp_fractions(COSTS8, 0.5))),
    ({"name": "oracle", "budget_ms": 2.0}, lambda: BudgetedOracle(2.0, COSTS1)),
])
def test_build_policy_fits_the_named_policy_with_its_costs(cfg, direct):
    config = parse_policy(cfg)
    with pytest.raises(InputError, match="build_policy"):
        make_policy(config)
    pol = build_policy(config, TRACE, LatencyModel(PROFILE), ServerConfig(max_batch=16,
                                                                         exit_mode="keep"))
    want = direct().fit(TRACE)
    assert type(pol) is type(want) and pol.n_exits_ == TRACE.n_exits
    json.dumps(pol.get_params())
    assert same_exits(pol, want)
    if hasattr(want, "costs"):
        assert np.allclose(pol.costs, want.costs)


def test_build_policy_fits_dynamic_ofa_levels():
    cfg = policy_config(name="dynamic-ofa", levels=[
        {"name": "maxprob", "budget_ms": 1.5},
        {"name": "eenet", "budget_ms": 2.5, "n_fits": 1, "epochs": 20}, {"name": "none"}],
        latency_target_ms=5, accuracy_target=0.9, switch_cost_ms=1.0)
    pol = build_policy(cfg, TRACE, LatencyModel(PROFILE), ServerConfig(max_batch=16))
    assert [type(lv) for lv in pol.levels] == [MaxProb, EENet, NoExit]
    assert same_exits(pol.levels[0], MaxProb(fractions=exp_fractions(COSTS1, 1.5)).fit(TRACE))
    assert pol.switch_cost_ms == 1.0 and pol.n_exits_ == TRACE.n_exits


def test_budget_policies_meet_their_budget_on_val():
    costs = exit_costs(PROFILE)
    for name in ("maxprob", "entropy", "oracle"):
        pol = build_policy(policy_config(name=name, budget_ms=2.0), TRACE, PROFILE)
        _, cost = evaluate(pol, TRACE, costs, "val")
        assert cost == pytest.approx(2.0, rel=0.05), name


def test_config_errors_are_clear():
    with pytest.raises(InputError, match="gati takes no tolerance_pct"):
        make_policy(policy_config(name="gati", tolerance_pct=99))
    with pytest.raises(InputError, match="none takes no fitting options"):
        make_policy(policy_config(name="none", tolerance_pct=99))
    with pytest.raises(InputError, match="eenet needs budget_ms"):
        build_policy(policy_config(name="eenet"), TRACE, PROFILE)
    with pytest.raises(InputError, match="needs a measured latency profile"):
        build_policy(policy_config(name="pame", tolerance_pct=99), TRACE, None)
    with pytest.raises(InputError, match="exactly one"):
        make_policy(policy_config(name="maxprob", tolerance_pct=99, fractions=[1, 0, 0, 0]))
    with pytest.raises(InputError, match="dynamic-ofa needs latency_target_ms"):
        make_policy(policy_config(name="dynamic-ofa", levels=[{"name": "none"}],
                                 accuracy_target=0.9))
    with pytest.raises(ValueError, match="extra"):
        policy_config(name="eenet", budget=3)


def test_config_round_trips_through_a_dump():
    # analysis/ re-validates a dumped config: defaults in the dump must not count as "set".
    cfg = policy_config(name="entropy", tolerance_pct=99)
    again = parse_policy(cfg.model_dump())
    assert np.isfinite(make_policy(again).fit(TRACE).thresholds_).any()


def test_registry_is_name_to_config_policy_build():
    from offramp.policies import REGISTRY
    from offramp.policies.configs import PolicyConfigBase
    from offramp.policies.parse import configs

    assert set(REGISTRY) == set(configs()) == set(POLICIES)
    for name, entry in REGISTRY.items():
        assert entry.config is configs()[name] and issubclass(entry.config, PolicyConfigBase)
        assert entry.policy is POLICIES[name] and entry.policy.name == name
        # Each tunable range names a field of that policy's own config, low < high.
        for field, rng in entry.config.tunable.items():
            assert field in entry.config.model_fields, (name, field)
            assert rng.low < rng.high


def test_each_config_holds_only_its_own_fields():
    from offramp.policies.configs import EntropyConfig, GatiConfig, NoneConfig, StaticConfig

    assert set(NoneConfig.model_fields) == {"name"}
    assert "window" not in EntropyConfig.model_fields and "levels" not in GatiConfig.model_fields
    assert type(policy_config(name="static:3")) is StaticConfig
    assert policy_config(name="static:3").exit == 3
    assert type(parse_policy({"name": "entropy", "tolerance_pct": 99})) is EntropyConfig
    lv = parse_policy({"name": "dynamic-ofa", "levels": [{"name": "entropy", "tolerance_pct": 99},
                                                         {"name": "none"}],
                       "latency_target_ms": 5, "accuracy_target": 0.9}).levels
    assert [type(x) for x in lv] == [EntropyConfig, NoneConfig]
    with pytest.raises(InputError, match=r"field 'levels\.1\.tolerance_pct': none takes no"):
        parse_policy({"name": "dynamic-ofa", "levels": [{"name": "none"},
                                                        {"name": "none", "tolerance_pct": 9}],
                      "latency_target_ms": 5, "accuracy_target": 0.9})


def test_a_registered_policy_works_by_name_and_as_a_dynamic_ofa_level():
    from typing import Literal

    from offramp.policies import REGISTRY, register
    from offramp.policies.baselines import StaticExit
    from offramp.policies.configs import PolicyConfigBase

    class LastConfig(PolicyConfigBase):
        name: Literal["last-test"] = "last-test"

    parse_policy({"name": "none"})  # the union was built before the registration
    assert register(LastConfig, StaticExit, lambda cfg, ctx: StaticExit(3)) == "last-test"
    try:
        assert type(parse_policy({"name": "last-test"})) is LastConfig
        dofa = parse_policy({"name": "dynamic-ofa", "levels": [{"name": "last-test"}],
                             "latency_target_ms": 5, "accuracy_target": 0.9})
        assert type(dofa.levels[0]) is LastConfig
        with pytest.raises(InputError, match="unknown policy 'nope'"):
            parse_policy({"name": "dynamic-ofa", "levels": [{"name": "nope"}],
                          "latency_target_ms": 5, "accuracy_target": 0.9})
    finally:
        REGISTRY.pop("last-test")
        POLICIES.pop("last-test")


@pytest.mark.parametrize("make, given", [
    (lambda: MaxProb(tolerance_pct=99), {"tolerance_pct": 99}),
    (lambda: Entropy(fractions=[0.4, 0.3, 0.2, 0.1]), {"fractions": [0.4, 0.3, 0.2, 0.1]}),
    (lambda: Patience(tolerance_pct=98), {"tolerance_pct": 98}),
    (lambda: Gati(0.85, COSTS1, lookup_ms=0.1, l2=2.0), {"lookup_ms": 0.1, "l2": 2.0}),
    (lambda: BudgetedOracle(2.0, COSTS1), {"budget_ms": 2.0}),
    (lambda: EENet(2.5, COSTS1, n_fits=1, epochs=10, lr=5e-3, seed=3),
     {"n_fits": 1, "epochs": 10, "lr": 5e-3, "seed": 3}),
], ids=["maxprob", "entropy", "patience", "gati", "oracle-budget", "eenet"])
def test_params_come_from_the_signature_and_rebuild_the_policy(make, given):
    pol = make()
    params = pol.get_params()
    assert given.items() <= params.items()  # every argument given, none forgotten
    rebuilt = type(pol)(**{k: v for k, v in params.items() if k != "name"})
    assert rebuilt.get_params() == params
    pol.fit(TRACE)
    fitted = pol.get_params()
    assert set(params) - {"fractions", "tolerance_pct"} <= set(fitted)
    json.dumps(fitted)
    if isinstance(pol, (MaxProb, Entropy, Patience)):  # the fitted values alone reproduce it
        again = type(pol)(**{k: v for k, v in fitted.items() if k != "name"}).fit(TRACE)
        assert same_exits(again, pol)


def test_exits_turn_early_exits_off_and_give_their_share_to_the_others():
    full = make_policy(parse_policy({"name": "maxprob", "tolerance_pct": 99})).fit(TRACE)
    some = make_policy(parse_policy({"name": "maxprob", "tolerance_pct": 99,
                                     "exits": [1, 2]})).fit(TRACE)
    assert some.active_exits(TRACE.n_exits).tolist() == [False, True, True, True]
    assert full.active_exits(TRACE.n_exits).tolist() == [True] * 4
    exits = some.exit_index(TRACE, TEST_IDS)
    assert not (exits == 0).any() and (exits == 1).any()
    # Exit 0's share of the tolerance goes to exit 1: it takes more than with exit 0 on.
    assert (exits == 1).mean() > (full.exit_index(TRACE, TEST_IDS) == 1).mean()
    again = type(some)(**{k: v for k, v in some.get_params().items() if k != "name"}).fit(TRACE)
    assert same_exits(again, some) and again.active_exits(4).tolist() == [False, True, True, True]
    for bad in ({"exits": [3]}, {"exits": [1, 1]}):
        with pytest.raises(InputError, match="exits"):
            make_policy(parse_policy({"name": "entropy", "tolerance_pct": 99, **bad})).fit(TRACE)
    with pytest.raises(InputError, match="exits"):
        make_policy(parse_policy({"name": "maxprob", "fractions": [0.4, 0.3, 0.2, 0.1],
                                  "exits": [1]})).fit(TRACE)


def test_policies_fitted_as_ready_are_those_fitted_one_by_one(monkeypatch):
    # EENet's fits start first (in the process pool where there is one, as the CLI has it)
    # and are collected last, the other policies fitted meanwhile; build_policies puts them
    # back in order.
    from offramp.common import pool
    from offramp.policies.registry import build_policies, fit_as_ready

    monkeypatch.setattr(pool, "_ENABLED", True)

    cfgs = [{"name": "maxprob", "budget_ms": 2.4},
            {"name": "eenet", "budget_ms": 2.4, "n_fits": 2, "epochs": 5, "seed": 3},
            {"name": "safe-exit", "budget_ms": 2.4, "target": "agreement", "folds": 2},
            {"name": "eenet", "budget_ms": 2.8, "n_fits": 2, "epochs": 5, "seed": 3},
            {"name": "static:1"}]
    latency = LatencyModel(PROFILE)
    assert [i for i, _ in fit_as_ready(cfgs, TRACE, latency)] == [0, 2, 4, 1, 3]
    in_order = list(build_policies(cfgs, TRACE, latency))
    one_by_one = [build_policy(cfg, TRACE, latency) for cfg in cfgs]
    assert [type(p) for p in in_order] == [type(p) for p in one_by_one]
    assert all(same_exits(a, b) for a, b in zip(in_order, one_by_one, strict=True))
    for a, b in zip(in_order[1:4:2], one_by_one[1:4:2], strict=True):
        assert np.array_equal(a.thresholds_, b.thresholds_)
    # A fit that fails after EENet's started: its error, and EENet's queued work dropped.
    cancelled = []
    monkeypatch.setattr(pool.Started, "cancel", lambda self: cancelled.append(self))
    bad = [*cfgs, {"name": "safe-exit", "budget_ms": 0.0001, "folds": 2}]
    with pytest.raises(InputError, match="below the first exit's cost"):
        list(fit_as_ready(bad, TRACE, latency))
    assert len(cancelled) == 1
