"""The core layer: exit modes and stage kinds as types, the batching rule by hand, and the rule
that core imports nothing beyond the standard library (the GPU-side loop imports it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from offramp.core import ExitMode, StageKind, dispatch, dispatch_time


def test_exit_modes_carry_their_behaviour():
    assert [m.value for m in ExitMode] == ["none", "keep", "shrink", "rebatch", "async"]
    assert [m.compacts for m in ExitMode] == [False, False, True, True, False]
    assert [m.keeps_size for m in ExitMode] == [False, True, False, False, True]
    assert [m.consults_early_exits for m in ExitMode] == [False, True, True, True, True]
    assert [m.rebatches for m in ExitMode] == [False, False, False, True, False]
    assert [m.lookups_aside for m in ExitMode] == [False, False, False, False, True]
    assert [m.real_loop_serves for m in ExitMode] == [True, True, True, True, False]
    assert ExitMode.parse("keep") is ExitMode.KEEP
    with pytest.raises(ValueError, match="unknown exit mode 'regather'"):
        ExitMode.parse("regather")


def test_stage_kinds_have_one_order_and_their_codes():
    order = ["overhead", "segment", "head", "check", "compact", "handoff"]
    assert [k.value for k in StageKind] == order
    assert [k.code for k in StageKind] == list(range(6))
    assert all(StageKind.from_code(k.code) is k for k in StageKind)
    assert {k for k in StageKind if k.is_model} == {StageKind.SEGMENT, StageKind.HEAD}
    assert {k for k in StageKind if k.optional} == {StageKind.CHECK, StageKind.HANDOFF,
                                                    StageKind.OVERHEAD}


ARR = [0.0, 0.001, 0.002, 0.010, 0.0105, 0.030]


@pytest.mark.parametrize("i,free,max_batch,wait,end,want", [
    # Four waiting by 0.002: a batch of 3 closes at its third arrival.
    (0, 0.0, 3, 0.005, 0.030, (0.002, 3)),
    # Max wait first: the oldest (0.010) waited 5 ms before a third arrived.
    (3, 0.0, 3, 0.005, 0.030, (0.015, 5)),
    # Free at 0.012, before the rule closes the batch (0.015): it still waits till 0.015.
    (3, 0.012, 3, 0.005, 0.030, (0.015, 5)),
    # Busy till 0.02, after the close: it goes then, with everybody there by then (two).
    (3, 0.02, 3, 0.005, 0.030, (0.02, 5)),
    # Busy till 0.05: at most max_batch go, the rest wait for the next batch.
    (0, 0.05, 4, 0.005, 0.030, (0.05, 4)),
    # The stream has ended (last arrival 0.030): the rest go at once, not after max_wait.
    (5, 0.0, 3, 0.005, 0.030, (0.030, 6)),
    # Fewer than max_batch left but the stream goes on past the wait: max_wait still applies.
    (3, 0.0, 8, 0.005, 0.100, (0.015, 5)),
    # max_wait 0: a batch goes at its oldest's arrival with whoever arrived at that instant.
    (1, 0.0, 8, 0.0, 0.030, (0.001, 2)),
])
def test_dispatch_by_hand(i, free, max_batch, wait, end, want):
    d, j = dispatch(ARR, i, free, max_batch, wait, end)
    assert d == pytest.approx(want[0]) and j == want[1]
    assert dispatch_time(ARR, i, max_batch, wait, end) <= max(d, free)


def test_dispatch_takes_same_instant_arrivals_together():
    arr = [0.0, 0.0, 0.0, 0.004]
    assert dispatch(arr, 0, 0.0, 8, 0.002, 0.004) == (0.002, 3)


def test_core_imports_only_the_standard_library():
    code = ("import sys\nimport offramp.core, offramp.core.batching, offramp.core.execution\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'torch', 'pandas', 'scipy', 'pydantic', 'simpy'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("mode", list(ExitMode))
def test_the_stages_a_mode_needs_are_those_the_execution_rule_runs(mode):
    """ExitMode.stages_needed (what profile import and show check) against every stage the
    execution rule runs for batches of 2 with every way of leaving at 4 exits."""
    import itertools

    from offramp.core.execution import batch_plan

    n = 4
    seen = set()
    for left in itertools.product((2, 1, 0), repeat=n - 1):
        going = tuple(min(left[: i + 1]) for i in range(n - 1))  # never more than before
        plan = batch_plan(mode, 2, going, (True,) * n)
        seen |= {(s.kind, s.k) for s in plan.stages if not s.kind.optional}
    assert seen == set(mode.stages_needed(n))
