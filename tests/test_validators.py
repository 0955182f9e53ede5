"""Every input validator at its boundary values: the last good value passes, the first bad fails."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
from helpers import affine_profile

from offramp.analysis.study.config import parse_config
from offramp.common.errors import InputError
from offramp.profiling.format import LatencyProfile, check_profile_matches, validate_profile
from offramp.sim.config import RunConfig, ServerConfig, WorkloadConfig
from offramp.traces.format import load_trace, save_trace, validate_trace
from offramp.traces.synthetic import synthetic_trace

TRACE = synthetic_trace(60, n_exits=3, n_classes=4, seed=2)


def bad_trace(match: str, **changes) -> None:
    with pytest.raises(InputError, match=match):
        validate_trace(replace(TRACE, **changes))


def arr(name: str, i: int, j: int | None, value) -> np.ndarray:
    a = getattr(TRACE, name).copy()
    if j is None:
        a[i] = value
    else:
        a[i, j] = value
    return a


def test_trace_split_codes():
    split = arr("split", 0, None, 1)
    acc = float(TRACE.correct[split == 1, -1].mean())
    validate_trace(replace(TRACE, split=split, meta={**TRACE.meta, "full_model_accuracy": acc}))
    bad_trace(r"split.*0 \(val\) or 1 \(test\)", split=arr("split", 0, None, 2))


def test_trace_class_ids_and_class_count():
    c = TRACE.meta["num_classes"]
    labels = arr("labels", 0, None, c - 1)
    validate_trace(replace(TRACE, labels=labels, correct=TRACE.pred == labels[:, None],
                           softmax=None, meta={**TRACE.meta, "full_model_accuracy": float(
                               (TRACE.pred == labels[:, None])[TRACE.split == 1, -1].mean())}))
    bad_trace(r"labels.*class ids must be in \[0, 4\)", labels=arr("labels", 0, None, c))
    bad_trace(r"labels.*class ids", labels=arr("labels", 0, None, -1))
    bad_trace(r"pred.*class ids", pred=arr("pred", 0, 0, c))
    bad_trace("num_classes.*integer >= 2", meta={**TRACE.meta, "num_classes": 1})
    bad_trace("num_classes", meta={**TRACE.meta, "num_classes": 2.0})


def test_trace_probability_ranges():
    c = TRACE.meta["num_classes"]
    ok = replace(TRACE, maxprob=arr("maxprob", 0, 0, 1.0 / c), entropy=arr("entropy", 0, 0, 1.0),
                 softmax=None)
    validate_trace(ok)
    validate_trace(replace(ok, maxprob=arr("maxprob", 0, 0, 1.0), entropy=arr("entropy", 0, 0, 0.0)))
    bad_trace(r"maxprob.*\[1/C, 1\]", maxprob=arr("maxprob", 0, 0, np.nan), softmax=None)
    bad_trace("maxprob", maxprob=arr("maxprob", 0, 0, 1.0 / c - 2e-3), softmax=None)
    bad_trace("maxprob", maxprob=arr("maxprob", 0, 0, 1.0 + 2e-3), softmax=None)
    # Without the softmax, the entropy is still bounded by what the maxprob allows: 0 only for
    # a maxprob of 1, 1 only for a uniform distribution (maxprob 1/C).
    validate_trace(replace(TRACE, entropy=arr("entropy", 0, 0, 0.0),
                           maxprob=arr("maxprob", 0, 0, 1.0), softmax=None))
    validate_trace(replace(TRACE, entropy=arr("entropy", 0, 0, 1.0),
                           maxprob=arr("maxprob", 0, 0, 1.0 / c), softmax=None))
    bad_trace(r"entropy.*no distribution with their maxprob has.*sample 0, exit 0",
              entropy=arr("entropy", 0, 0, 1.0), maxprob=arr("maxprob", 0, 0, 0.9), softmax=None)
    bad_trace(r"entropy.*maxprob 0.500 allows entropy 0.500..0.896",  # two classes at 0.5
              entropy=arr("entropy", 0, 0, 0.0), maxprob=arr("maxprob", 0, 0, 0.5), softmax=None)
    # With the softmax kept, entropy and pred must be what it says (float16 rounding allowed).
    e00 = float(TRACE.entropy[0, 0])
    validate_trace(replace(TRACE, entropy=arr("entropy", 0, 0, e00 + 0.019)))
    bad_trace("entropy.*disagrees with the softmax", entropy=arr("entropy", 0, 0, e00 + 0.021))
    wrong = TRACE.pred.copy()
    wrong[0, 0] = (wrong[0, 0] + 1) % c
    bad_trace("pred.*not the argmax", pred=wrong, correct=wrong == TRACE.labels[:, None])
    bad_trace("entropy must be in", entropy=arr("entropy", 0, 0, np.nan))
    bad_trace("entropy must be in", entropy=arr("entropy", 0, 0, 1.0 + 1e-5))
    bad_trace("entropy must be in", entropy=arr("entropy", 0, 0, -1e-5))


def test_trace_correct_accuracy_and_exit_metadata():
    bad_trace("does not equal", correct=~TRACE.correct)
    acc = TRACE.meta["full_model_accuracy"]
    validate_trace(replace(TRACE, meta={**TRACE.meta, "full_model_accuracy": acc + 5e-7}))
    bad_trace("full_model_accuracy", meta={**TRACE.meta, "full_model_accuracy": acc + 2e-6})
    bad_trace("exit_positions.*must increase", meta={**TRACE.meta, "exit_positions": [1, 2, 2]})
    bad_trace("exit_positions.*3 positions", meta={**TRACE.meta, "exit_positions": [1, 2]})
    bad_trace("exit_positions.*3 positions", meta={**TRACE.meta, "exit_positions": [1, "2", 3]})
    bad_trace("full_model_accuracy.*number", meta={**TRACE.meta, "full_model_accuracy": "0.9"})
    bad_trace("meta.model_id.*non-empty string", meta={**TRACE.meta, "model_id": 7})
    bad_trace("exit_names.*3 names", meta={**TRACE.meta, "exit_names": ["a", "b"]})
    meta = dict(TRACE.meta)
    del meta["synthetic"]
    bad_trace("meta.synthetic.*missing", meta=meta)
    bad_trace("softmax.*shape", softmax=TRACE.softmax[:, :2])
    bad_trace("split.*shape", split=TRACE.split[:-1])
    bad_trace("correct.*bool", correct=TRACE.correct.astype(int))
    bad_trace("no samples", labels=TRACE.labels[:0])


SIZES = {"val": int((TRACE.split == 0).sum()), "test": int((TRACE.split == 1).sum())}
DESCRIBED = {**TRACE.meta, "split_sizes": SIZES, "class_names": ["a", "b", "c", "d"],
             "exit_position_unit": "fraction of layers", "entropy_recorded": True}


def test_trace_metadata_that_describes_the_arrays():
    validate_trace(replace(TRACE, meta=DESCRIBED))
    validate_trace(replace(TRACE, meta={**DESCRIBED, "synthetic": False}))
    only_test = {**DESCRIBED, "split_sizes": {"test": TRACE.n_samples},
                 "full_model_accuracy": float(TRACE.correct[:, -1].mean())}
    validate_trace(replace(TRACE, split=np.ones_like(TRACE.split), meta=only_test))  # no val
    for key, value in [("split_sizes", {**SIZES, "test": SIZES["test"] + 1}),
                       ("split_sizes", {**SIZES, "train": 0}), ("split_sizes", [1, 2]),
                       ("split_sizes", {**SIZES, "val": float(SIZES["val"])}),
                       ("class_names", ["a", "b", "c", 3]), ("class_names", "abcd"),
                       ("synthetic", 1), ("exit_position_unit", "")]:
        bad_trace(f"meta.{key}", meta={**DESCRIBED, key: value})


@pytest.mark.parametrize("key, value, match", [
    ("split_sizes", {"val": 1, "test": 2},
     r"as the split array holds them, \{'val': \d+, 'test': \d+\}, got \{'val': 1, 'test': 2\}"),
    ("class_names", ["a", "b"], r"must list 4 names \(meta.num_classes\), one per class, got 2"),
    ("synthetic", "maybe", "must be true or false, got 'maybe'"),
    ("entropy_recorded", "no", "must be true or false, got 'no'"),
    ("exit_position_unit", 5, "must be a non-empty string, got 5")])
def test_loading_a_trace_whose_metadata_disagrees_is_one_error(key, value, match, tmp_path):
    good = save_trace(replace(TRACE, meta=DESCRIBED), tmp_path / "good.npz")
    with np.load(good) as z:
        data = {name: z[name] for name in z.files}
    path = tmp_path / "bad.npz"
    meta = {**json.loads(str(data["meta"])), key: value}
    np.savez_compressed(path, **{**data, "meta": np.array(json.dumps(meta))})
    load_trace(good)
    with pytest.raises(InputError, match=match) as err:
        load_trace(path)
    assert (err.value.source, err.value.field) == (str(path), f"meta.{key}")
    assert "offramp traces record" in err.value.fix

PROF = affine_profile(3, range(1, 5))


def bad_row(match: str, i: int, **changes) -> None:
    rows = copy.deepcopy(PROF.rows)
    rows[i].update(changes)
    with pytest.raises(InputError, match=match):
        validate_profile(LatencyProfile(rows=rows, meta=PROF.meta))


def row_of(kind: str) -> int:
    return next(i for i, r in enumerate(PROF.rows) if r["kind"] == kind)


def good_row(i: int, **changes) -> None:
    rows = copy.deepcopy(PROF.rows)
    rows[i].update(changes)
    validate_profile(LatencyProfile(rows=rows, meta=PROF.meta))


def test_profile_row_boundaries():
    seg = row_of("segment")
    good_row(seg, p50_ms=2.0, p99_ms=2.0)
    good_row(seg, p50_ms=1e-6, p99_ms=1e-6, mean_ms=0.0, std_ms=0.0)
    bad_row("segment must take some time", seg, p50_ms=0.0, p99_ms=0.0, mean_ms=0.0, std_ms=0.0)
    good_row(row_of("overhead"), p50_ms=0.0, p99_ms=0.0, mean_ms=0.0, std_ms=0.0)
    good_row(seg, p50_ms=2.0, p99_ms=3.6e6)
    bad_row("at most 3.6e[+]06 ms", seg, p50_ms=2.0, p99_ms=3.6e6 + 1)
    bad_row("finite number >= 0", seg, p99_ms=True)
    bad_row("p99 1.9 < p50 2.0", seg, p50_ms=2.0, p99_ms=1.9)
    bad_row("finite number >= 0", seg, p50_ms=-0.1)
    bad_row("finite number >= 0", seg, std_ms=float("nan"))
    bad_row("finite number >= 0", seg, mean_ms=float("inf"))
    bad_row("finite number >= 0", seg, p99_ms="3")
    good_row(seg, runs=1)
    bad_row("runs.*positive integer", seg, runs=0)
    bad_row("batch.*positive integer", seg, batch=0)
    bad_row("batch.*positive integer", seg, batch=1.0)


def test_profile_exit_index_boundaries():
    # Segments and heads exist for exits 0..K-1, compaction after 0..K-2, overhead only as k=0.
    for kind, last in (("segment", 2), ("head", 2), ("compact", 1), ("overhead", 0)):
        i = row_of(kind)
        rows = copy.deepcopy(PROF.rows)
        # Move the row to the last valid index (dropping the row that was there).
        rows = [r for r in rows if not (r["kind"] == kind and r["k"] == last
                                        and r["batch"] == rows[i]["batch"])] if last else rows
        j = next(n for n, r in enumerate(rows) if r["kind"] == kind)
        rows[j]["k"] = last
        if kind in ("compact", "overhead") or last == 0:
            validate_profile(LatencyProfile(rows=rows, meta=PROF.meta))
        bad_row(f"exit index {last + 1} out of range for kind {kind}", i, k=last + 1)
    bad_row("exit index -1 out of range", row_of("segment"), k=-1)


def test_profile_coverage_duplicates_and_meta():
    rows = copy.deepcopy(PROF.rows)
    rows.append(dict(rows[0]))
    with pytest.raises(InputError, match="duplicate row"):
        validate_profile(LatencyProfile(rows=rows, meta=PROF.meta))
    rows = [r for r in PROF.rows if not (r["kind"] == "head" and r["k"] == 2)]
    with pytest.raises(InputError, match="no rows for head 2"):
        validate_profile(LatencyProfile(rows=rows, meta=PROF.meta))
    with pytest.raises(InputError, match="n_exits.*positive integer"):
        validate_profile(LatencyProfile(rows=PROF.rows, meta={**PROF.meta, "n_exits": 0}))
    with pytest.raises(InputError, match="no rows"):
        validate_profile(LatencyProfile(rows=[], meta=PROF.meta))
    check_profile_matches(PROF, "crafted", 3)
    with pytest.raises(InputError, match="profile has 3 exits but the trace"):
        check_profile_matches(PROF, "crafted", 4)
    with pytest.raises(InputError, match="model 'crafted'"):
        check_profile_matches(PROF, "other", 3)


def test_run_and_server_config_boundaries():
    assert RunConfig(warmup_fraction=0.0).warmup_fraction == 0.0
    assert RunConfig(warmup_fraction=0.999).warmup_fraction == 0.999
    for bad in (1.0, -0.01):
        with pytest.raises(ValueError, match="warmup_fraction"):
            RunConfig(warmup_fraction=bad)
    assert RunConfig().requests == 100_000
    assert RunConfig(duration_s=2.0).requests is None
    with pytest.raises(ValueError, match="only one of"):
        RunConfig(requests=5, duration_s=1.0)
    for field, bad in (("requests", 0), ("replications", 0), ("seed", -1), ("duration_s", 0.0)):
        with pytest.raises(ValueError, match=field):
            RunConfig(**{field: bad})
    assert ServerConfig(max_batch=1, max_wait_ms=0.0).max_batch == 1
    for field, bad in (("max_batch", 0), ("max_wait_ms", -0.1), ("replicas", 0)):
        with pytest.raises(ValueError, match=field):
            ServerConfig(**{field: bad})
    assert ServerConfig(max_batch=8, engine_sizes=[2, 8]).engine_sizes == [2, 8]
    with pytest.raises(ValueError, match="do not cover max_batch 9"):
        ServerConfig(max_batch=9, engine_sizes=[2, 8])
    with pytest.raises(ValueError, match="positive batch sizes"):
        ServerConfig(max_batch=8, engine_sizes=[0, 8])
    with pytest.raises(ValueError, match="positive batch sizes"):
        ServerConfig(max_batch=8, engine_sizes=[])
    ok = ServerConfig(replicas=2, contention=[{"at_s": 0, "factor": 2, "replicas": [0, 1]}])
    assert ok.slowdown() == [([-1.0, 0.0], [1.0, 2.0]), ([-1.0, 0.0], [1.0, 2.0])]
    with pytest.raises(ValueError, match=r"outside 0..1"):
        ServerConfig(replicas=2, contention=[{"at_s": 0, "factor": 2, "replicas": [2]}])
    with pytest.raises(ValueError, match=r"outside 0..1"):
        ServerConfig(replicas=2, contention=[{"at_s": 0, "factor": 2, "replicas": [-1]}])
    for kind, field, bad in (("poisson", "rate_rps", 0.0), ("gamma", "cv", 0.0),
                             ("closed", "clients", 0), ("closed", "think_ms", -1.0),
                             ("diurnal", "amplitude", 1.0), ("diurnal", "period_s", 0.0),
                             ("replay", "rate_scale", 0.0)):
        with pytest.raises(ValueError, match=field):
            WorkloadConfig(kind=kind, **{field: bad})
    assert WorkloadConfig(kind="diurnal", amplitude=0.99).amplitude == 0.99  # never a rate of 0
    assert WorkloadConfig(kind="closed", think_ms=0.0, clients=1).clients == 1
    # A field the kind does not read is an error, not silently ignored.
    with pytest.raises(ValueError, match="kind 'poisson' takes no clients"):
        WorkloadConfig(kind="poisson", clients=4)


def test_contention_schedule_per_replica():
    srv = ServerConfig(replicas=3, contention=[{"at_s": 2.0, "factor": 3.0, "replicas": [1]},
                                              {"at_s": 1.0, "factor": 0.5}])
    assert srv.slowdown() == [([-1.0, 1.0], [1.0, 0.5]), ([-1.0, 1.0, 2.0], [1.0, 0.5, 3.0]),
                              ([-1.0, 1.0], [1.0, 0.5])]


def test_study_config_boundaries():
    assert parse_config({"run": {"warmup_fraction": 0}}, "s.yaml").run.warmup_fraction == 0
    with pytest.raises(InputError, match="s.yaml: field 'run.warmup_fraction'"):
        parse_config({"run": {"warmup_fraction": 1}}, "s.yaml")
    with pytest.raises(InputError, match="field 'slo.latency_ms'"):
        parse_config({"slo": {"latency_ms": 0}}, "s.yaml")
    cfg = parse_config({"profile": {"kind": "deterministic", "mean_ms": 2},
                        "server": {"exit_mode": "none"}}, "s.yaml")
    assert cfg.profile.mean_ms == 2
    with pytest.raises(InputError, match="exit_mode: none"):
        parse_config({"profile": {"kind": "deterministic"}, "server": {"exit_mode": "keep"}},
                     "s.yaml")


LOOP_PROF = affine_profile(3, range(1, 5), check=(0.03, 0.01), handoff=(0.02, 0.005))


@pytest.mark.parametrize("kind", ["check", "handoff"])
def test_v2_loop_stage_rows_only_at_early_exits(kind, tmp_path):
    from offramp.profiling.format import load_profile, save_profile

    validate_profile(LOOP_PROF)
    for bad_k in (2, 3):  # the last exit (no decision, no boundary after it) and past it
        rows = copy.deepcopy(LOOP_PROF.rows)
        next(r for r in rows if r["kind"] == kind)["k"] = bad_k
        path = tmp_path / "p.json"
        save_profile(LatencyProfile(rows=LOOP_PROF.rows, meta=PROF.meta), path)
        doc = json.loads(path.read_text())
        doc["rows"] = rows
        path.write_text(json.dumps(doc))
        with pytest.raises(InputError, match=rf"p.json: field 'rows\[\d+\]\.k': exit index {bad_k} "
                           rf"out of range for kind {kind} with 3 exits: must be"):
            load_profile(path)


def test_v1_profile_loads_with_loop_stages_at_zero_and_one_notice(tmp_path, capsys):
    from offramp.profiling.format import load_profile, save_profile
    from offramp.profiling.latency import LatencyModel

    path = save_profile(PROF, tmp_path / "old.json")
    doc = json.loads(path.read_text())
    assert doc["version"] == 2
    doc["version"] = 1
    path.write_text(json.dumps(doc))
    prof = load_profile(path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "version-1 profile" in err[0] and "taken as 0 ms" in err[0]
    assert LatencyModel(prof).lookup("check", 0, 4) == (0.0, 0.0)
    assert LatencyModel(prof).lookup("handoff", 1, 4) == (0.0, 0.0)
    load_profile(path)
    assert capsys.readouterr().err == ""  # said once per file
    doc["version"] = 3
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"version 3 is not supported \(this offramp reads versions"):
        load_profile(path)
