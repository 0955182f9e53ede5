"""The validation plan: one frozen, typed record written by prepare and read by the real side
and the comparison; JSON round trip, defaults for every field the real side reads, and one
error naming the field for a bad plan."""

from __future__ import annotations

import json

import pytest

from offramp.core.modes import ExitMode
from offramp.core.plan import PLAN_VERSION, PlanError, ValidationPlan

MINIMAL = {"model": "fmnist-resnet", "trace": "t.npz", "policy": {"name": "entropy"},
           "rule": {"kind": "entropy", "thresholds": [0.1, 0.2, 0.3],
                    "active": [True, True, True, True]},
           "modes": ["keep", "shrink"], "loads": [{"utilisation": 0.3}, {"rate_rps": 500}],
           "rate0_rps": 900.0}


def test_round_trip_and_defaults():
    plan = ValidationPlan.from_dict(MINIMAL)
    assert plan.modes == (ExitMode.KEEP, ExitMode.SHRINK) and plan.rule.thresholds == (0.1, 0.2, 0.3)
    # Every setting the real side reads has a default.
    assert (plan.core, plan.checkpoint, plan.seq_len, plan.max_batch, plan.served_requests) == (
        None, None, 64, 32, 2000)
    again = ValidationPlan.from_json(plan.to_json())
    assert again == plan and again.version == PLAN_VERSION
    assert json.loads(plan.to_json())["modes"] == ["keep", "shrink"]
    # An old, unversioned plan reads the same; a plan that differs only in its command is the same.
    assert ValidationPlan.from_dict({**MINIMAL, "command": "x"}).same_plan(plan)
    assert not ValidationPlan.from_dict({**MINIMAL, "max_batch": 8}).same_plan(plan)
    # rebatch is served too, with its discipline and stage wait
    rb = ValidationPlan.from_dict({**MINIMAL, "modes": ["rebatch"], "discipline": "oldest_first",
                                   "stage_max_wait_ms": 0})
    assert ValidationPlan.from_json(rb.to_json()) == rb
    assert (rb.modes[0].rebatches, rb.discipline.value, rb.stage_max_wait_ms) == (
        True, "oldest_first", 0.0)


@pytest.mark.parametrize("change,field", [
    ({"max_batch": 0}, "max_batch"),
    ({"max_batch": True}, "max_batch"),
    ({"warmup_fraction": 1.0}, "warmup_fraction"),
    ({"modes": ["teleport"]}, "modes"),
    ({"modes": ["keep", "async"]}, "modes"),  # the real loop cannot overlap a lookup
    ({"discipline": "loudest_first"}, "discipline"),
    ({"stage_max_wait_ms": -1}, "stage_max_wait_ms"),
    ({"loads": [{"busy": 0.3}]}, "loads"),
    ({"rule": {"kind": "magic"}}, "rule"),
    ({"core": -1}, "core"),
    ({"colour": "red"}, "colour"),
    ({"version": PLAN_VERSION + 1}, "version"),
])
def test_a_bad_plan_names_its_field(change, field):
    with pytest.raises(PlanError) as err:
        ValidationPlan.from_dict({**MINIMAL, **change})
    assert err.value.field == field


def test_a_missing_required_field_is_named():
    data = dict(MINIMAL)
    del data["rate0_rps"]
    with pytest.raises(PlanError, match="rate0_rps: missing"):
        ValidationPlan.from_dict(data)
