"""The margin policy (docs/architecture.md's example of adding a policy), by hand and by name."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import scored_trace

from offramp.analysis.study.config import parse_config
from offramp.common.errors import InputError
from offramp.policies import build_policy, make_policy, policy_config
from offramp.policies.margin import Margin, MarginConfig
from offramp.traces.format import make_trace


def three_class_trace():
    # Sample 0: margin 0.8 at exit 0. Sample 1: 0.45 vs 0.40 at exit 0 (margin 0.05), then
    # 0.7 at exit 1. Sample 2: never confident. Synthetic: tests only.
    sm = np.array([
        [[0.9, 0.1, 0.0], [0.9, 0.1, 0.0], [0.9, 0.1, 0.0]],
        [[0.45, 0.40, 0.15], [0.8, 0.1, 0.1], [0.8, 0.1, 0.1]],
        [[0.4, 0.35, 0.25], [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]],
    ])
    meta = {"model_id": "m3", "dataset": "synthetic", "exit_names": ["a", "b", "c"],
            "exit_positions": [1, 2, 3], "produced_by": {"command": "tests"}, "synthetic": True}
    return make_trace(np.zeros(3, dtype=int), np.ones(3, dtype=np.uint8), sm, meta)


def test_margin_exits_where_the_gap_reaches_the_threshold():
    tr = three_class_trace()
    pol = Margin(0.5).fit(tr, "test")
    assert pol.exit_index(tr, [0, 1, 2]).tolist() == [0, 1, 2]
    # Max-prob would exit sample 1 at exit 0 at threshold 0.45; the margin rule does not.
    assert pol.exit_mask(tr, np.array([1]))[0].tolist() == [False, True, True]
    assert Margin(0.75).fit(tr, "test").exit_index(tr, [0, 1]).tolist() == [0, 2]


def test_margin_by_name_in_a_study_and_its_config():
    assert type(policy_config(name="margin", min_margin=0.3)) is MarginConfig
    cfg = parse_config({"policy": {"name": "margin", "min_margin": 0.3}}, "s.yaml")
    assert isinstance(cfg.policy, MarginConfig) and cfg.policy.min_margin == 0.3
    tr = scored_trace([[0.9, 0.6], [0.55, 0.95]], [[True, True], [False, True]], n_val=0)
    built = build_policy(cfg.policy, tr, split="test")
    assert built.get_params() == make_policy({"name": "margin", "min_margin": 0.3}).get_params()
    assert built.exit_index(tr, [0, 1]).tolist() == [0, 1]
    with pytest.raises(InputError, match="margin takes no tolerance_pct"):
        policy_config(name="margin", tolerance_pct=99)
    with pytest.raises(InputError, match="min_margin"):
        policy_config(name="margin", min_margin=1.5)


def test_margin_needs_the_softmax():
    tr = three_class_trace()
    bare = type(tr)(**{**tr.__dict__, "softmax": None})
    with pytest.raises(InputError, match="needs the per-exit softmax"):
        Margin().fit(bare)
