"""The execution rule, stage by stage, against schedules written out by hand."""

from __future__ import annotations

import pytest

from offramp.core.execution import Stage, all_exit_at, batch_plan, no_exit


def S(kind: str, k: int, b: int) -> Stage:
    return Stage(kind, k, b)


def test_shrink_schedule_by_hand():
    # 4 exits, batch 8: 5 go on past exit 0, exit 1 not consulted, 2 go on past exit 2.
    plan = batch_plan("shrink", 8, (5, 5, 2), (True, False, True, True))
    assert plan.stages == (
        S("overhead", 0, 8), S("segment", 0, 8), S("head", 0, 8), S("check", 0, 8),
        S("compact", 0, 5), S("segment", 1, 5), S("handoff", 1, 5), S("segment", 2, 5),
        S("head", 2, 5), S("check", 2, 5), S("compact", 2, 2), S("segment", 3, 2),
        S("head", 3, 2))
    # Leavers at exit 0 finish after its check (stage 4), at 2 after its check (10), the rest
    # at the end (13; the last exit takes no decision); exit 1 decides nothing.
    assert plan.ends == (4, -1, 10, 13)


def test_keep_none_and_nobody_leaving():
    keep = batch_plan("keep", 4, (3, 0), (True, True, True))
    assert keep.stages == (S("overhead", 0, 4), S("segment", 0, 4), S("head", 0, 4),
                           S("check", 0, 4), S("handoff", 0, 4), S("segment", 1, 4),
                           S("head", 1, 4), S("check", 1, 4))
    assert keep.ends == (4, 8, -1)
    assert no_exit(2, 3).stages == (S("overhead", 0, 2), S("segment", 0, 2), S("handoff", 0, 2),
                                    S("segment", 1, 2), S("handoff", 1, 2), S("segment", 2, 2),
                                    S("head", 2, 2))
    # shrink where nobody leaves: handed on whole, never compacted.
    whole = batch_plan("shrink", 3, (3, 3), (True, True, True))
    assert [s.kind for s in whole.stages].count("compact") == 0
    assert [s.kind for s in whole.stages].count("handoff") == 2
    assert all_exit_at("shrink", 2, 0, 3).stages == (S("overhead", 0, 2), S("segment", 0, 2),
                                                     S("head", 0, 2), S("check", 0, 2))
    # rebatch's single batch runs as shrink's (sim/rebatch.py gathers across batches).
    assert batch_plan("rebatch", 3, (2, 1), (True, True, True)) == batch_plan(
        "shrink", 3, (2, 1), (True, True, True))
    with pytest.raises(ValueError, match="unknown exit mode"):
        batch_plan("regather", 2, (1, 1), (True, True, True))
