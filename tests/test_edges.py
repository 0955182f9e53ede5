"""Edges that mutation testing found untested (docs/testing.md): boundaries, defaults that must
agree across layers, immutability, and small helpers. Synthetic data: tests only."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
from helpers import affine_profile, crafted_trace, scored_trace
from pydantic import ValidationError

from offramp.analysis.study.config import parse_config
from offramp.common.errors import InputError
from offramp.policies import policy_config
from offramp.policies.base import StatefulPolicy
from offramp.policies.baselines import NoExit, StaticExit
from offramp.policies.confidence import MaxProb
from offramp.policies.costs import check_costs
from offramp.policies.dynamic_ofa import DynamicOFA
from offramp.policies.eenet import EENet
from offramp.policies.gati import Gati
from offramp.policies.mixing import upper_hull
from offramp.policies.oracle_lp import oracle_lp
from offramp.policies.pame import PAME
from offramp.policies.parse import configs
from offramp.policies.patience import Patience
from offramp.policies.table import load_policy
from offramp.policies.thresholds import from_tolerance
from offramp.profiling.format import LatencyProfile, validate_profile
from offramp.profiling.latency import LatencyModel
from offramp.sim.config import ServerConfig, WorkloadConfig
from offramp.traces.format import make_trace, validate_trace
from offramp.traces.synthetic import synthetic_trace

TRACE = synthetic_trace(400, seed=9)


def default(field: str):
    return next(c.model_fields[field].default for c in configs().values() if field in c.model_fields)


# A valid config of the policy that owns each field, to break one bound of.
_GATI = {"name": "gati", "accuracy_target": 0.9}
_DOFA = {"name": "dynamic-ofa", "levels": [{"name": "none"}], "latency_target_ms": 5.0,
         "accuracy_target": 0.9}
OWNER = {"budget_ms": {"name": "eenet", "budget_ms": 1.0}, "lookup_ms": _GATI,
         "selector_threshold": _GATI, "window": _DOFA, "accuracy_target": _GATI,
         "latency_target_ms": _DOFA, "tail_tolerance_pct": {"name": "pame", "tolerance_pct": 99}}


def with_bad(field: str, bad):
    return policy_config(**{**OWNER[field], field: bad})


def test_policy_class_defaults_agree_with_the_config_defaults():
    # A study that leaves a field out gets the config default; a Python user constructing the
    # class directly must get the same policy.
    d = DynamicOFA([NoExit()], 5.0, 0.9)
    assert (d.window, d.warmup, d.up_after, d.switch_cost_ms, d.lock, d.hold_s) == tuple(
        default(f) for f in ("window", "warmup", "up_after", "switch_cost_ms", "lock", "hold_s"))
    assert PAME(99, affine_profile(3, range(1, 9)), 8).tail_tolerance_pct == \
        default("tail_tolerance_pct")
    e = EENet(2.0, [1.0, 2.0, 3.0])
    assert (e.n_fits, e.epochs, e.seed, e.lr, e.hidden_scale, e.decoupled_weight_decay) == \
        tuple(default(f) for f in ("n_fits", "epochs", "seed", "lr", "hidden_scale",
                                   "decoupled_weight_decay"))
    g = Gati(0.9, [1.0, 2.0, 3.0])
    assert (g.lookup_ms, g.threshold) == (default("lookup_ms"), default("selector_threshold"))
    assert StaticExit().k == 0 and StaticExit().fit(TRACE).exit_index(TRACE, [0, 1]).tolist() == [0, 0]
    assert ServerConfig().max_batch == 32 and ServerConfig().max_wait_ms == 2.0


def test_policy_config_bounds():
    for field, bad in (("budget_ms", 0.0), ("lookup_ms", -0.1), ("selector_threshold", 1.0),
                       ("selector_threshold", 0.0), ("window", 0), ("accuracy_target", 1.01)):
        with pytest.raises((ValidationError, InputError), match=field):
            with_bad(field, bad)
    assert with_bad("lookup_ms", 0.0).lookup_ms == 0.0
    assert with_bad("selector_threshold", 0.999).selector_threshold == 0.999
    assert WorkloadConfig(rate_rps=0.5).rate_rps == 0.5


def test_configs_and_solutions_are_frozen():
    cfg = parse_config({}, "s.yaml")
    with pytest.raises(ValidationError):
        cfg.run = cfg.run
    with pytest.raises(ValidationError):
        cfg.slo.latency_ms = 3.0
    sol = oracle_lp(np.array([[True, True], [False, True]]), [1.0, 2.0], 1.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sol.accuracy = 0.0


def test_config_error_counts_the_other_problems():
    with pytest.raises(InputError) as one:
        parse_config({"server": {"max_batch": 0}}, "s.yaml")
    assert "more)" not in str(one.value)
    with pytest.raises(InputError) as two:
        parse_config({"server": {"max_batch": 0, "replicas": 0}}, "s.yaml")
    assert "(1 more)" in str(two.value)
    with pytest.raises(InputError) as three:
        parse_config({"server": {"max_batch": 0, "replicas": 0, "max_wait_ms": -1}}, "s.yaml")
    assert "(2 more)" in str(three.value)


def test_repr_and_the_stateful_defaults():
    assert repr(MaxProb(tolerance_pct=99)) == "MaxProb({'tolerance_pct': 99})"
    assert repr(NoExit()) == "NoExit({})"

    class Quiet(StatefulPolicy):
        name = "quiet"

    with pytest.raises(RuntimeError, match="not fitted"):
        Quiet().controller(2)
    q = Quiet().fit(TRACE).controller(2)
    assert q.begin_batch(0.0, 0) == 0.0 and q.history == []
    assert q.observe(0.0, 0.001, 0, 1) is None


def test_check_costs_rejects_non_finite_and_non_positive_costs():
    assert check_costs([1.0, 2.0], 2).tolist() == [1.0, 2.0]
    for bad in ([np.nan, 2.0], [1.0, np.inf], [0.0, 1.0], [1.0], [2.0, 1.0]):
        with pytest.raises(InputError, match="costs"):
            check_costs(bad, 2)


def test_dynamic_ofa_settings_boundaries():
    lv = [StaticExit(0), NoExit()]
    DynamicOFA(lv, 5.0, 0.9, window=1, warmup=0, up_after=0).fit(TRACE)
    DynamicOFA(lv, 5.0, 0.9, initial_level=1).fit(TRACE)
    for kw in ({"window": 0}, {"warmup": -1}, {"up_after": -1}):
        with pytest.raises(InputError, match="window > 0"):
            DynamicOFA(lv, 5.0, 0.9, **kw).fit(TRACE)
    with pytest.raises(InputError, match="window > 0"):
        DynamicOFA(lv, 0.0, 0.9).fit(TRACE)
    with pytest.raises(InputError, match="whole numbers"):
        DynamicOFA(lv, 5.0, 0.9, window=2.5, unit="batches").fit(TRACE)
    DynamicOFA(lv, 5.0, 0.9, window=0.25, warmup=0.1, up_after=1.5, unit="seconds").fit(TRACE)
    for start in (2, -1):
        with pytest.raises(InputError, match="not a level index"):
            DynamicOFA(lv, 5.0, 0.9, initial_level=start).fit(TRACE)


@pytest.mark.parametrize("window, latencies_ms, mean", [
    (2, [1.0, 3.0], 2.0),                 # too short to trim: the plain mean
    (3, [1.0, 2.0, 100.0], 2.0),          # trims one each side
    (10, list(range(1, 10)) + [1000.0], 5.5),  # trims 1 each side of 10
])
def test_dynamic_ofa_window_mean_trims_outliers(window, latencies_ms, mean):
    pol = DynamicOFA([NoExit()], 1e9, 0.9, window=window, warmup=0).fit(TRACE).controller(1)
    for i, ms in enumerate(latencies_ms):
        pol.observe(i * 0.01, ms / 1000.0, 0, 3)
    assert pol.window_mean_ms() == pytest.approx(mean)


def test_gati_and_patience_and_pame_validate_their_targets():
    with pytest.raises(InputError, match="accuracy_target"):
        Gati(1.5, [1.0, 2.0, 3.0, 4.0]).fit(TRACE)
    with pytest.raises(InputError, match="tolerance_pct"):
        Patience(tolerance_pct=0).fit(TRACE)
    assert Patience(tolerance_pct=100).fit(TRACE).patience_ >= 1
    assert Patience(2).get_params() == {"name": "patience", "patience": 2}
    assert Patience(tolerance_pct=97).get_params() == {"name": "patience", "tolerance_pct": 97}
    tr = crafted_trace([[True, True, True]] * 16, n_val=8)
    prof = affine_profile(3, range(1, 9))
    PAME(100, prof, max_batch=8).fit(tr)  # max_batch = number of val samples: allowed
    for b in (0, 9):
        with pytest.raises(InputError, match="max_batch"):
            PAME(100, prof, max_batch=b).fit(tr)


def test_pame_with_no_exit_has_the_no_exit_worst_case():
    tr = crafted_trace([[True, True, True]] * 32, n_val=32)
    prof = affine_profile(3, range(1, 9), head=(20.0, 0.0), last_head=(0.5, 0.0))
    pol = PAME(100, prof, max_batch=8, tail_tolerance_pct=1000).fit(tr)
    assert pol.exits_ == []
    assert pol.report_["worst_batch_ms"] == pytest.approx(pol.report_["no_exit_batch_ms"])
    assert pol.report_["worst_batch_ms"] == pytest.approx(0.1 + 3 * 1.8 + 0.5)


def test_pame_conditional_target_after_two_placed_exits():
    # Confidence falls with depth of difficulty; the first exit takes the easy half, the second
    # the next quarter. With the conditional target each later exit may take more than it could
    # against the unconditional one.
    n = 64
    conf = [[0.99 - 0.005 * i, 0.99 - 0.004 * i, 0.99] for i in range(n)]
    right = [[i < 32, i < 48 or i % 2 == 0, True] for i in range(n)]
    tr = scored_trace(conf, right, n_val=n)
    prof = affine_profile(3, range(1, 17), seg=(0.2, 0.2), head=(0.01, 0.0))
    pol = PAME(100, prof, max_batch=16, tail_tolerance_pct=1000).fit(tr)
    exits = pol.exit_index(tr, np.arange(n))
    assert pol.exits_ == [0, 1]
    # Mixed val accuracy keeps τ = 100 %: every sample right where it leaves.
    assert tr.correct[np.arange(n), exits].all()
    assert (exits == 0).sum() == 32 and (exits == 1).sum() > 0


def test_tolerance_when_everyone_exits_early_warns_nothing():
    conf = np.array([[0.9, 1.0], [0.8, 1.0]])
    correct = np.ones((2, 2), dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert from_tolerance(np.c_[conf, np.ones(2)], np.c_[correct, np.ones(2, bool)],
                              100).tolist() == [0.8, np.inf]


def test_upper_hull_ties_and_collinear_points():
    # Equal cost: the more accurate point starts the hull.
    assert [x.tolist() for x in upper_hull([0.5, 0.7, 0.9], [1.0, 1.0, 2.0])] == [[1.0, 2.0],
                                                                                [0.7, 0.9]]
    # A costlier point no more accurate adds nothing.
    assert [x.tolist() for x in upper_hull([0.7, 0.7], [1.0, 2.0])] == [[1.0], [0.7]]
    # Collinear middle points are not vertices.
    assert [x.tolist() for x in upper_hull([0.5, 0.6, 0.7], [1.0, 2.0, 3.0])] == [[1.0, 3.0],
                                                                                [0.5, 0.7]]
    # A cost that happens to equal the previous vertex's accuracy is still a new point.
    assert [x.tolist() for x in upper_hull([0.8, 0.9], [0.5, 0.8])] == [[0.5, 0.8], [0.8, 0.9]]


def test_saved_exit_table_rejects_negative_exits(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"format": "offramp-policy", "version": 1, "policy": "x",
                             "trace_fingerprint": "f", "exits": [0, -1]}))
    with pytest.raises(InputError, match="non-negative exit indices"):
        load_policy(f)


def test_profile_row_missing_a_column_is_named():
    prof = affine_profile(2, range(1, 3))
    rows = [dict(r) for r in prof.rows]
    del rows[1]["p50_ms"]
    with pytest.raises(InputError, match=r"rows\[1\]\.p50_ms.*missing"):
        validate_profile(LatencyProfile(rows=rows, meta=prof.meta))


def test_latency_of_a_zero_median_stage_has_no_spread():
    prof = affine_profile(2, range(1, 3))
    rows = [dict(r) for r in prof.rows]
    seg = next(r for r in rows if r["kind"] == "segment")
    seg.update(p50_ms=0.0, mean_ms=0.0, p99_ms=0.5)
    model = LatencyModel(LatencyProfile(rows=rows, meta=prof.meta))
    assert model.lookup("segment", 0, seg["batch"]) == (0.0, 0.0)


def test_softmax_with_nan_or_negative_entries_is_rejected():
    meta = {"model_id": "m", "dataset": "synthetic", "exit_names": ["a", "b"],
            "exit_positions": [1, 2], "produced_by": {"command": "tests"}, "synthetic": True}
    sm = np.array([[[0.9, 0.1], [0.8, 0.2]], [[0.3, 0.7], [0.6, 0.4]]])
    tr = make_trace(np.zeros(2, dtype=int), np.ones(2, dtype=np.uint8), sm, meta)
    bad = tr.softmax.astype(np.float32).copy()
    bad[0, 0] = [np.nan, np.nan]
    with pytest.raises(InputError, match="probability vectors"):
        validate_trace(dataclasses.replace(tr, softmax=bad))
    bad = tr.softmax.astype(np.float32).copy()
    bad[1, 1] = [0.6, -0.0001 + 0.4001]
    bad[1, 0] = [1.0005, -0.0005]
    with pytest.raises(InputError, match="probability vectors"):
        validate_trace(dataclasses.replace(tr, softmax=bad))


def test_tolerance_does_not_split_a_tie_below_the_top():
    # Scores 0.9, 0.8, 0.8, 0.7 with the second 0.8 wrong; the full model is always right (T = 1).
    # Cutting between the two 0.8s would take only right answers, but a threshold cannot.
    conf = np.array([[0.9, 1], [0.8, 1], [0.8, 1], [0.7, 1]], dtype=float)
    correct = np.array([[1, 1], [1, 1], [0, 1], [1, 1]], dtype=bool)
    assert from_tolerance(conf, correct, 100).tolist() == [0.9]


def test_pame_reports_its_saving():
    tr = crafted_trace([[True, True, True]] * 32, n_val=32)
    pol = PAME(100, affine_profile(3, range(1, 9)), max_batch=8, tail_tolerance_pct=25).fit(tr)
    # 2.4 ms against 6.0 ms without exits: 60 % saved.
    assert pol.report_["latency_saving_pct"] == pytest.approx(100 * (1 - 2.4 / 6.0))


def test_softmax_must_match_maxprob():
    meta = {"model_id": "m", "dataset": "synthetic", "exit_names": ["a", "b"],
            "exit_positions": [1, 2], "produced_by": {"command": "tests"}, "synthetic": True}
    sm = np.array([[[0.9, 0.1], [0.8, 0.2]], [[0.3, 0.7], [0.6, 0.4]]])
    tr = make_trace(np.zeros(2, dtype=int), np.ones(2, dtype=np.uint8), sm, meta)
    off = tr.maxprob.copy()
    off[0, 0] = 0.85  # softmax says 0.9
    with pytest.raises(InputError, match="does not match maxprob"):
        validate_trace(dataclasses.replace(tr, maxprob=off))


def test_profiles_are_frozen_and_know_their_kinds(tmp_path):
    prof = affine_profile(2, range(1, 3))
    assert prof.has("segment") and prof.has("compact") and not prof.has("check")
    with pytest.raises(dataclasses.FrozenInstanceError):
        prof.rows = []
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"format": "something-else", "version": 2, "meta": {}, "rows": []}))
    from offramp.profiling.format import load_profile

    with pytest.raises(InputError, match="field 'format'"):
        load_profile(f)


def test_contention_factor_may_speed_up_but_not_be_zero():
    from offramp.sim.config import ContentionStep

    assert ContentionStep(at_s=0.0, factor=0.5).factor == 0.5
    with pytest.raises(ValidationError, match="factor"):
        ContentionStep(at_s=0.0, factor=0.0)


def test_more_bounds_and_messages():
    from offramp.policies.costs import as_latency_model
    from offramp.policies.registry import build_policy, make_policy

    for field, bad in (("accuracy_target", 0.0), ("latency_target_ms", 0.0),
                       ("tail_tolerance_pct", -1.0)):
        with pytest.raises((ValidationError, InputError), match=field):
            with_bad(field, bad)
    # Two misplaced fields: the message names the first (sorted).
    with pytest.raises(InputError, match="gati takes no patience"):
        make_policy(policy_config(name="gati", tolerance_pct=99, patience=2))
    prof = affine_profile(4, range(1, 33), model_id="synthetic-net")
    assert build_policy(policy_config(name="pame", tolerance_pct=98), TRACE, prof).max_batch == 32
    with pytest.raises(InputError, match=r"0\.\.3"):
        StaticExit(7).fit(TRACE).exit_index(TRACE, [0])
    bucketed = LatencyModel(prof, [4, 32])
    assert as_latency_model(bucketed).engine_sizes == [4, 32]
    assert as_latency_model(bucketed, [8, 32]).engine_sizes == [8, 32]
    with pytest.raises(InputError) as two:
        parse_config({"server": {"max_batch": 0, "replicas": 0}}, "s.yaml")
    assert "field 'server.max_batch'" in str(two.value)


@pytest.mark.parametrize("tau", [0, 100.5])
def test_pame_tolerance_bounds(tau):
    tr = crafted_trace([[True, True, True]] * 16, n_val=8)
    with pytest.raises(InputError, match="tolerance_pct"):
        PAME(tau, affine_profile(3, range(1, 9)), max_batch=8).fit(tr)


def test_pame_reports_val_relative_accuracy():
    tr = crafted_trace([[True, True, True]] * 32, n_val=32)
    pol = PAME(100, affine_profile(3, range(1, 9)), max_batch=8, tail_tolerance_pct=25).fit(tr)
    assert pol.report_["val_relative_accuracy_pct"] == pytest.approx(100.0)


def test_saved_arrivals_have_exactly_the_two_columns(tmp_path):
    import pandas as pd

    from offramp.sim.workload import save_arrivals

    for name in ("a.csv", "a.parquet"):
        path = save_arrivals(tmp_path / name, np.array([0.0, 0.25]), np.array([3, 4]))
        frame = pd.read_parquet(path) if name.endswith("parquet") else pd.read_csv(path)
        assert frame.columns.tolist() == ["arrival_s", "sample_id"]
        assert frame["arrival_s"].tolist() == [0.0, 0.25]


def test_tolerance_fits_an_exit_with_a_single_sample_left():
    # Exit 0 takes the first sample; exit 1 then has one sample, right there: it takes it.
    conf = np.array([[0.9, 0.5, 1.0], [0.1, 0.9, 1.0]])
    correct = np.array([[1, 1, 1], [0, 1, 1]], dtype=bool)
    assert from_tolerance(conf, correct, 100).tolist() == [0.9, 0.9]


def test_patience_tolerance_is_a_percentage_of_the_full_model():
    # 199 samples settle at once and are right; one flips 0,1,1,0 (wrong at patience 1, exit 2).
    # Patience 1 keeps 199/200 = 99.5 % of the full model: enough for τ = 99.5, not for 100.
    rows = [[True] * 4] * 199 + [[True, False, False, True]]
    tr = crafted_trace(rows * 2, n_val=200)
    assert Patience(tolerance_pct=100).fit(tr).patience_ == 2
    assert Patience(tolerance_pct=99.5).fit(tr).patience_ == 1


def test_atomic_outputs_get_the_mode_the_umask_gives(tmp_path):
    """Temporary files and folders are private (0o600 / 0o700) until renamed; the output then
    has the mode a plain write would give."""
    import os
    import stat

    from offramp.common.atomic import atomic_path
    from offramp.common.outputs import output_dir

    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("{}")
        with output_dir(tmp_path / "d", ["x"]) as d:
            (d / "x").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750
