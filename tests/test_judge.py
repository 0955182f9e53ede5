"""How validate judges a cell, worked out by hand (analysis/validation/judge.py)."""

from __future__ import annotations

import pytest

from offramp.analysis.validation.judge import Verdict, flag_repeats, judge, judge_cells, kept, robust_spread


def test_robust_spread_ignores_one_stray_repeat():
    # Quartiles of [10, 11, 12, 13, 100] (linear): 11 and 13; median 12 -> spread 1/12.
    med, q25, q75, spread = robust_spread([10, 11, 12, 13, 100])
    assert (med, q25, q75) == (12, 11, 13)
    assert spread == pytest.approx(1 / 12)
    # Asymmetric quartiles: [10, 20, 40]: q25 15, q75 30, median 20 -> max(5, 10) / 20.
    assert robust_spread([10, 20, 40])[3] == pytest.approx(0.5)


@pytest.mark.parametrize("values,sim,target,verdict,error", [
    ([10, 11, 12, 13, 100], 12.5, 0.03, Verdict.WITHIN, 0.5 / 12),   # 4.2% <= 8.3% spread
    ([10, 11, 12, 13, 100], 14.0, 0.03, Verdict.OUTSIDE, 2 / 12),    # 16.7% > 8.3%
    ([100, 100, 100], 103.0, 0.03, Verdict.WITHIN, 0.03),            # the target, no spread
    ([100, 100, 100], 103.5, 0.03, Verdict.OUTSIDE, 0.035),
    ([10, 20, 30], 24.0, 0.0, Verdict.WITHIN, 0.2),                  # spread 25%: still judged
    ([10, 20, 40], 20.0, 0.0, Verdict.TOO_NOISY, 0.0),               # spread 50%: never within
    ([0, 0, 0], 0.0, 0.03, Verdict.WITHIN, 0.0),
    ([0, 0, 0], 1.0, 0.03, Verdict.OUTSIDE, float("inf")),
])
def test_verdicts_by_hand(values, sim, target, verdict, error):
    cell = judge(values, sim, target)
    assert cell.verdict is verdict
    assert cell.error == pytest.approx(error)
    assert cell.within == (verdict is Verdict.WITHIN)
    assert cell.as_dict()["verdict"] == verdict.value


def test_repeats_that_saturate_or_stray_are_flagged_and_left_out():
    # Target 0.6: 0.45 strays (|0.15| > 15% of 0.6 = 0.09), 0.99 saturated, 0.65 is fine.
    assert flag_repeats([0.6, 0.65, 0.45, 0.99], 0.6) == [2, 3]
    assert flag_repeats([0.6, 0.65, 0.45, 0.99], None) == [3]
    assert kept([1, 2, 3, 4], [2, 3]) == [1, 2]
    assert kept([1, 2, 3], [0, 1]) == [1, 2, 3]  # fewer than two would remain: keep all


def test_a_saturated_repeat_cannot_make_a_cell_pass():
    # Five repeats at "90%": one saturated (p50 1,358 ms). With it, the old max-distance
    # spread was ±5,000%; now it is flagged, the rest judge, and a 40% miss is outside.
    real = [{"latency_p50_ms": v} for v in (20.0, 21.0, 22.0, 23.0, 1358.0)]
    busy = [0.90, 0.91, 0.89, 0.92, 0.999]
    rows, flagged = judge_cells(real, busy, {"latency_p50_ms": 30.8}, ["latency_p50_ms"],
                                {"latency_p50_ms": 0.03}, 0.9)
    assert flagged == [4]
    (row,) = rows
    # Kept: 20, 21, 22, 23 -> median 21.5, quartiles 20.75 and 22.25: spread 0.75 / 21.5.
    assert row["median"] == pytest.approx(21.5) and row["repeats"] == 4
    assert row["spread"] == pytest.approx(0.75 / 21.5)
    assert row["target"] == 0.0  # at 90% busy the spread alone judges
    assert row["error"] == pytest.approx(30.8 / 21.5 - 1) and row["verdict"] == "outside"
    # Below 90% the statistic's target applies.
    rows, _ = judge_cells(real[:4], busy[:4], {"latency_p50_ms": 22.0}, ["latency_p50_ms"],
                          {"latency_p50_ms": 0.03}, 0.6)
    assert rows[0]["target"] == 0.03


def test_the_overall_line_counts_and_advises():
    import pandas as pd

    from offramp.analysis.cli.validate import overall

    table = pd.DataFrame({"key": ["a", "a", "b", "b"], "within": [True, False, False, True],
                          "verdict": ["within", "outside", "too noisy", "within"],
                          "flagged": [[], [], [2], [2]]})
    line = overall(table)
    assert line.startswith("overall: 2 of 4 cells within, 1 outside, 1 too noisy to judge")
    assert "stage table" in line and "more repeats" in line and "1 repeats left out" in line


def test_a_miss_is_explained_by_queueing_or_the_stages_up_to_an_exit():
    # Built by hand: the simulation's time in service is right at exit 0 and 25% long at
    # exit 3 (its later stages), its queueing right: the explanation names in service and
    # the stages up to exit 3.
    import pandas as pd

    from offramp.analysis.validation.explain import explain_misses

    def side(service_ms_at_3, queue_ms):
        n = 200
        arrival = [i * 0.01 for i in range(n)]
        exits = [0 if i % 2 else 3 for i in range(n)]
        dispatch = [a + queue_ms / 1e3 for a in arrival]
        finish = [d + (1.0 if k == 0 else service_ms_at_3) / 1e3
                  for d, k in zip(dispatch, exits, strict=True)]
        return pd.DataFrame({"arrival_s": arrival, "dispatch_s": dispatch, "finish_s": finish,
                             "exit_index": exits, "warmup": [i < 10 for i in range(n)],
                             "key": "shrink-L1"})

    table = pd.DataFrame({"key": ["shrink-L1", "shrink-L1", "none-L0"], "mode": "shrink",
                          "load": [{"utilisation": 0.6}] * 3,
                          "within": [True, False, False], "verdict": ["within", "outside",
                                                                      "within"]})
    out = explain_misses(table, side(4.0, 0.5), side(5.0, 0.5))
    assert list(out) == ["shrink-L1"]  # only the point with a cell outside
    part = out["shrink-L1"]
    assert part["queue"]["error"] == pytest.approx(0.0, abs=1e-9)
    assert part["service_by_exit"][0]["error"] == pytest.approx(0.0, abs=1e-9)
    assert part["service_by_exit"][3]["error"] == pytest.approx(0.25)
    assert part["line"].startswith("shrink at 60% busy: in service misses most")
    assert "the stages up to exit 3 (+25%" in part["line"]
    # Queueing that misses more than service is named instead.
    line = explain_misses(table, side(4.0, 0.5), side(4.0, 1.0))["shrink-L1"]["line"]
    assert "queueing misses most" in line
    assert "segments at" not in line  # no level where the table gives none
    # With the level the real loop ran its segments at (compare.py, from the served table).
    part = explain_misses(table.assign(level=1.124), side(4.0, 0.5),
                          side(4.0, 0.5))["shrink-L1"]
    assert part["level"] == 1.124 and "ran its segments at x1.12 of the cost model's" in part["line"]
