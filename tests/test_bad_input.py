"""Bad configs, traces and profiles: one clear error each, no traceback, no partial output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import affine_profile

from offramp.analysis.cli import main
from offramp.analysis.study.config import parse_config
from offramp.common.errors import InputError
from offramp.profiling.format import (
    check_profile_matches,
    load_profile,
    save_profile,
)
from offramp.profiling.latency import LatencyModel
from offramp.profiling.synthetic import synthetic_profile
from offramp.traces.format import load_trace, save_trace
from offramp.traces.synthetic import synthetic_trace

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("data,field,words", [
    ({"server": {"max_bacth": 8}}, "server.max_bacth", "unknown field"),
    ({"server": {"max_batch": 0}}, "server.max_batch", "greater than or equal to 1"),
    ({"server": {"exit_mode": "teleport"}}, "server.exit_mode",
     "'none', 'keep', 'shrink', 'rebatch' or 'async'"),
    ({"workload": {"rate_rps": -5}}, "workload.rate_rps", "greater than or equal to 0.001"),
    ({"run": {"requests": 10, "duration_s": 3}}, "run", "only one of"),
    ({"server": {"max_batch": 64, "engine_sizes": [8, 32]}}, "server.engine_sizes", "do not cover"),
    ({"workload": {"kind": "replay"}}, "workload.path", "needs a path"),
    ({"profile": {"kind": "exponential"}}, "(top level)", "exit_mode: none"),
    ({"profile": {"kind": "profile", "path": None}}, "profile", "needs a path"),
    ([1, 2], None, "YAML mapping"),
])
def test_bad_config_names_the_field(data, field, words):
    with pytest.raises(InputError) as err:
        parse_config(data, "study.yaml")
    msg = str(err.value)
    assert msg.startswith("study.yaml")
    assert words in msg
    if field:
        assert f"field '{field}'" in msg


def test_unknown_policy_is_rejected():
    from offramp.policies import make_policy, policy_config

    with pytest.raises(InputError, match="unknown policy 'entropyy'"):
        make_policy(policy_config(name="entropyy"))
    with pytest.raises(InputError, match="needs thresholds, fractions or tolerance_pct"):
        make_policy(policy_config(name="maxprob"))
    with pytest.raises(InputError, match="static:K"):
        make_policy(policy_config(name="static"))


def test_missing_and_corrupt_trace(tmp_path):
    with pytest.raises(InputError, match="no such trace file"):
        load_trace(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable offramp trace"):
        load_trace(bad)
    # Truncated file.
    good = save_trace(synthetic_trace(200), tmp_path / "t.npz")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(InputError, match="cut.npz"):
        load_trace(cut)


def _rewrite(path: Path, **changes) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(path, **arrays)


@pytest.mark.parametrize("change,field", [
    (lambda a: {"maxprob": a["maxprob"] * 3}, "maxprob"),
    (lambda a: {"entropy": a["entropy"] - 2}, "entropy"),
    (lambda a: {"correct": ~a["correct"]}, "correct"),
    (lambda a: {"split": a["split"] + 5}, "split"),
    (lambda a: {"pred": a["pred"][:, :2]}, "maxprob"),
    (lambda a: {"labels": a["labels"] + 100}, "labels"),
    (lambda a: {"meta": np.array(json.dumps({**json.loads(str(a["meta"])), "version": 9}))},
     "meta.version"),
    (lambda a: {"meta": np.array(json.dumps({**json.loads(str(a["meta"])),
                                             "full_model_accuracy": 0.1}))},
     "meta.full_model_accuracy"),
])
def test_malformed_trace_names_field(tmp_path, change, field):
    path = save_trace(synthetic_trace(300), tmp_path / "t.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    _rewrite(path, **change(arrays))
    with pytest.raises(InputError) as err:
        load_trace(path)
    assert f"field '{field}'" in str(err.value)
    assert str(path) in str(err.value)


def test_profile_round_trip_and_errors(tmp_path):
    prof = synthetic_profile()
    path = save_profile(prof, tmp_path / "p.json")
    back = load_profile(path)
    assert back.rows == prof.rows and back.meta == prof.meta
    doc = json.loads(path.read_text())
    doc["rows"][3]["p99_ms"] = -1
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"rows\[3\]\.p99_ms"):
        load_profile(path)
    doc["rows"] = [r for r in doc["rows"] if not (r["kind"] == "head" and r["k"] == 2)]
    doc["rows"][3]["p99_ms"] = 10.0
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="no rows for head 2"):
        load_profile(path)
    path.write_text("{oops")
    with pytest.raises(InputError, match="not valid JSON"):
        load_profile(path)


def test_profile_trace_mismatch_is_rejected():
    trace = synthetic_trace(100, n_exits=3)
    with pytest.raises(InputError, match="profile has 4 exits but the trace .* has 3"):
        check_profile_matches(synthetic_profile(4), trace.model_id, trace.n_exits, "t.npz")
    with pytest.raises(InputError, match="profile is for model 'other'"):
        check_profile_matches(synthetic_profile(3, model_id="other"), trace.model_id, 3)


def test_latency_model_never_extrapolates():
    model = LatencyModel(affine_profile(3, range(2, 9)))
    assert model.lookup("segment", 0, 5)[0] == pytest.approx(1.5)
    with pytest.raises(InputError, match="measured for batch sizes 2..8, and a batch of 9 was asked for"):
        model.lookup("segment", 0, 9)
    with pytest.raises(InputError, match="measured for batch sizes 2..8, and a batch of 1 was asked for"):
        model.lookup("segment", 0, 1)
    # Interpolation between measured sizes.
    sparse = affine_profile(3, [1, 4, 16])
    assert LatencyModel(sparse).lookup("segment", 1, 10)[0] == pytest.approx(2.0)


def _study(tmp_path: Path, **sections) -> Path:
    import yaml

    shutil.copy(DATA / "synthetic-trace.npz", tmp_path / "trace.npz")
    shutil.copy(DATA / "synthetic-profile.json", tmp_path / "profile.json")
    cfg = {"trace": {"path": "trace.npz"}, "profile": {"path": "profile.json"},
           "run": {"requests": 2000, "replications": 2}, **sections}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_bad_input_one_line_no_partial_output(tmp_path, capsys):
    study = _study(tmp_path, server={"max_batch": 128})
    out = tmp_path / "run"
    assert main(["simulate", str(study), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "a batch of 65 was asked for" in err[0] and "profile.json" in err[0]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".run")] == []


def test_cli_simulate_writes_run_folder(tmp_path, capsys):
    import pandas as pd

    study = _study(tmp_path, policy={"name": "entropy", "tolerance_pct": 99},
                   slo={"latency_ms": 20})
    out = tmp_path / "run"
    assert main(["simulate", str(study), "-o", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["replications"] == 2 and doc["engine"] == "fast"
    assert 0 < doc["metrics"]["slo_attainment"]["mean"] <= 1
    assert sorted(p.name for p in out.iterdir()) == [
        "config.resolved.yaml", "latency.png", "requests.parquet", "summary.json"]
    frame = pd.read_parquet(out / "requests.parquet")
    assert len(frame) == 4000
    assert set(frame.columns) >= {"request_id", "sample_id", "arrival_s", "dispatch_s", "finish_s",
                                  "exit_index", "correct", "replica", "batch_id"}
    # --set overrides a field; the same seed gives the same summary.
    assert main(["simulate", str(study), "-o", str(out), "--json",
                 "--set", "workload.rate_rps=500"]) == 0
    doc2 = json.loads(capsys.readouterr().out)
    assert doc2["metrics"]["throughput_rps"]["mean"] < doc["metrics"]["throughput_rps"]["mean"]
    assert main(["simulate", str(study), "-o", str(tmp_path / "run2"), "--json"]) == 0
    doc3 = json.loads(capsys.readouterr().out)
    assert doc3 == doc


STUDY = "examples/fmnist-entropy-shrink.yaml"
SHORT = ["--set", "run.requests=2000", "--set", "run.replications=1"]


@pytest.mark.parametrize("argv,field,words", [
    # What the user typed is what the error names (the flag, or the study field).
    (["simulate", STUDY, *SHORT, "--set", "policy.name=pame", "--set",
      "policy.tolerance_pct=99", "--set", "server.exit_mode=none", "-o", "{tmp}/r"],
     "server.exit_mode", "got 'none'"),
    (["capacity", STUDY, *SHORT, "--slo-p99-ms", "0.0001"], "--slo-p99-ms / slo.latency_ms",
     "p99 <= 0.0001 ms does not hold"),
    (["simulate", STUDY, *SHORT, "--set", "server.max_batch=512", "-o", "{tmp}/r"], "rows",
     "use server.max_batch <= 256"),
    (["concurrency", STUDY, "--clients", "4-1"], "4-1", "empty range"),
    (["simulate", STUDY, *SHORT, "--set", "server.max_batchh=3", "-o", "{tmp}/r"],
     "server.max_batchh", "README.md (Simulating a study)"),
])
def test_errors_name_what_the_user_typed(argv, field, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = [e for e in capsys.readouterr().err.strip().splitlines() if "req/s ->" not in e]
    assert len(err) == 1 and f"field '{field}'" in err[0] and words in err[0], err


@pytest.mark.parametrize("flags,line", [
    (["--compare", "exit_mode=none"], "offramp: error: --compare: field 'exit_mode=none': must "
     'look like section.field=value (fix: e.g. --compare "server.exit_mode=none")'),
    (["--compare", "server.max_batch="], "offramp: error: --compare: field 'server.max_batch=': "
     "has no value after '=' (fix: e.g. --compare server.max_batch=16)"),
    (["--set", "exit_mode=none", "--compare", "server.max_batch=8"], "offramp: error: --set: "
     "field 'exit_mode=none': must look like section.field=value (fix: e.g. --set "
     "workload.rate_rps=2000)"),
])
def test_capacity_errors_name_the_flag_typed(flags, line, capsys, monkeypatch):
    """A malformed --compare item is a --compare error with a --compare example."""
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    assert main(["capacity", STUDY, *SHORT, *flags]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_capacity_takes_the_slo_each_variant_sets(capsys, monkeypatch):
    """A --set or --compare of slo.latency_ms is the bound searched (it was ignored)."""
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    assert main(["capacity", STUDY, *SHORT, "--compare", "slo.latency_ms=15",
                 "--compare", "slo.latency_ms=30", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [v["slo"]["latency_ms"] for v in doc.values()] == [15.0, 30.0]
    assert doc["slo.latency_ms=15"]["capacity_rps"] < doc["slo.latency_ms=30"]["capacity_rps"]


def test_a_search_range_must_be_a_range():
    from pydantic import ValidationError

    from offramp.policies.configs import Tunable

    assert Tunable(low=1, high=1).low == 1
    with pytest.raises(ValidationError, match="low 5 is above high 1"):
        Tunable(low=5, high=1)
    with pytest.raises(ValidationError, match="log-spaced range needs low > 0"):
        Tunable(low=0, high=1, log=True)


@pytest.mark.parametrize("flags,field,words", [
    (["--policy", "eenet", "--budget-ms", "0.001"], "--budget-ms", "below the first exit"),
    (["--policy", "eenet"], "--budget-ms", "give --budget-ms"),
    (["--policy", "entropy"], "--policy", "give --tolerance, --budget-ms"),
    (["--policy", "pame", "--tolerance", "99", "--exit-mode", "keep", "--max-batch", "6000"],
     "--max-batch", "lower --max-batch"),
    (["--policy", "maxprob", "--budget-ms", "1", "--param", "exits=[0]"], "--param exits",
     "use --param exits with"),
    (["--policy", "bogus"], "--policy", "unknown policy 'bogus'"),
    (["--policy", "static:9"], "--policy", "static:9 but the trace has exits 0..3"),
])
def test_fit_errors_name_its_flags(flags, field, words, tmp_path, capsys):
    assert main(["fit", "--trace", "fmnist-resnet", "--profile", "fmnist-resnet-cpu", *flags,
                 "-o", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"offramp fit: field '{field}'" in err[0] and words in err[0], err


def test_fit_refuses_a_field_given_twice(tmp_path, capsys):
    assert main(["fit", "--trace", "fmnist-resnet", "--profile", "fmnist-resnet-cpu", "--policy",
                 "entropy", "--tolerance", "99", "--param", "tolerance_pct=98",
                 "-o", str(tmp_path / "p.json")]) == 2
    assert "tolerance_pct is also given by --tolerance" in capsys.readouterr().err
