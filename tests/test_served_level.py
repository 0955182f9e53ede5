"""Re-levelling a served-cost table on a short stream (profiling/served_level.py).

The served table and the streams here are synthetic (a unit-test input, labelled so): a
stream whose segments ran 1.25x and heads 0.8x what the table predicts, at the idle times and
batch sizes it records. The real loop's re-levelling runs in tests/test_cost_model.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from offramp.core.modes import CostModel, StageKind
from offramp.profiling.format import LatencyProfile
from offramp.profiling.latency import LatencyModel
from offramp.profiling.served import idle_before, idle_bin
from offramp.profiling.served_level import level_shifts, relevel
from offramp.profiling.synthetic import synthetic_profile

SLOWER = {StageKind.SEGMENT: 1.25, StageKind.HEAD: 0.8}


def stream(served: dict, n_batches: int = 400, seed: int = 0, skip: str = "segment 3") -> dict:
    """Batches of 1-16 after idle spells of 0-20 ms, each running segments 0-3 and heads 0-3
    (``skip`` never runs), every time the table's p50 x its idle factor x SLOWER x noise."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 17, n_batches)
    idle_ms = rng.uniform(0.0, 20.0, n_batches)
    finish = np.cumsum(idle_ms / 1000.0 + 0.005)  # each batch takes 5 ms after its idle
    dispatch = finish - 0.005
    cols = {c: [] for c in ("kind", "k", "b", "ms", "batch")}
    for i, b in enumerate(sizes):
        for kind in SLOWER:
            for k in range(4):
                key = f"{kind} {k}"
                if key == skip:
                    continue
                p50 = dict((r[0], r[1]) for r in served["stages"][key])[int(b)]
                f = served["factor"][str(kind)]["idle"][int(idle_bin(idle_ms[i]))]
                for c, v in zip(cols, (kind.code, k, b, p50 * f * SLOWER[kind]
                                       * np.exp(0.05 * rng.standard_normal()), i), strict=True):
                    cols[c].append(v)
    assert np.allclose(idle_before(dispatch, finish), idle_ms)  # the idle the loop saw
    return {"stage_kind": np.array(cols["kind"]), "stage_k": np.array(cols["k"]),
            "stage_size": np.array(cols["b"]), "stage_ms": np.array(cols["ms"]),
            "stage_batch": np.array(cols["batch"]), "batch_dispatch": dispatch,
            "batch_finish": finish, "batch_sizes": sizes[:, None]}


def test_each_stage_moves_to_its_level_now_and_keeps_its_shape():
    prof = synthetic_profile(n_exits=4, batches=tuple(range(1, 33)), served_costs=True)
    served = prof.meta["served_costs"]
    out = relevel(served, [stream(served)], ["s.npz"], {"loads": [0.3]})
    rel = out["relevelled"]
    for k in range(3):
        assert rel["factor"][f"segment {k}"] == pytest.approx(1.25, rel=0.01)
        assert rel["factor"][f"head {k}"] == pytest.approx(0.8, rel=0.01)
    # Never served: its kind's level, not the stage's own.
    assert "segment 3" not in rel["own"]
    assert rel["factor"]["segment 3"] == pytest.approx(1.25, rel=0.01)
    # Kinds the stream never ran: the median over every stage with a level of its own.
    own = np.log([rel["factor"][key] for key in rel["own"]])
    assert rel["factor"]["compact 0"] == pytest.approx(np.exp(np.median(own)), rel=1e-3)
    for key, rows in out["stages"].items():
        old = served["stages"][key]
        ratio = [new[1] / was[1] for new, was in zip(rows, old, strict=True)]
        assert np.allclose(ratio, rel["factor"][key], rtol=1e-4)  # one factor: the shape kept
        assert [r[2:] for r in rows] == [r[2:] for r in old]  # sigma and counts kept
    assert out["factor"] == served["factor"] and out["noise_corr"] == served["noise_corr"]
    assert np.allclose(out["batch_tail_ms"]["ms"], np.array(served["batch_tail_ms"]["ms"])
                       * rel["factor"]["segment 0"], rtol=0.02)
    assert rel["loads"] == [0.3] and rel["sources"] == ["s.npz"] and rel["streams"] == 1
    # Studies on the re-levelled profile predict with the moved levels.
    before = LatencyModel(prof, costs=CostModel.SERVED)
    after = LatencyModel(LatencyProfile(rows=prof.rows, meta={**prof.meta, "served_costs": out}),
                         costs=CostModel.SERVED)
    assert after.lookup("segment", 1, 8)[0] == pytest.approx(
        1.25 * before.lookup("segment", 1, 8)[0], rel=0.01)


def test_a_stream_that_ran_too_little_is_refused():
    served = synthetic_profile(n_exits=4, batches=tuple(range(1, 33)),
                               served_costs=True).meta["served_costs"]
    with pytest.raises(ValueError, match="often enough"):
        level_shifts(served, [stream(served, n_batches=10)])


def test_the_level_of_the_segments_is_how_much_slower_they_ran():
    # validate's per-point level: the segments' median factor (1.25 here), whatever the
    # heads did; the same stream against a table made 20% faster reads 1.25 times more; a
    # stream too short to tell gives None, not an error.
    from offramp.profiling.served_level import segment_level

    served = synthetic_profile(n_exits=4, batches=tuple(range(1, 33)),
                               served_costs=True).meta["served_costs"]
    run = stream(served)
    assert segment_level(served, [run]) == pytest.approx(1.25, rel=0.01)
    faster = {**served, "stages": {key: [[r[0], None if r[1] is None else r[1] * 0.8, *r[2:]]
                                         for r in rows]
                                   for key, rows in served["stages"].items()}}
    assert segment_level(faster, [run]) / segment_level(served, [run]) == pytest.approx(1.25)
    assert segment_level(served, [stream(served, n_batches=10)]) is None
