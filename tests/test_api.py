"""The Python API (``import offramp``, docs/api.md) gives what the commands give: the same
numbers for the same study and seed, by the same rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import offramp
from offramp.analysis.cli import main
from offramp.common.errors import InputError

REPO = Path(__file__).resolve().parent.parent
STUDY = {"trace": {"path": "fmnist-resnet"}, "profile": {"path": "fmnist-resnet-cpu"},
         "policy": {"name": "entropy", "tolerance_pct": 99}, "workload": {"rate_rps": 900.0},
         "server": {"max_batch": 16}, "run": {"requests": 3000, "replications": 2}}


def _file(tmp_path: Path, data=STUDY) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_import_is_light_and_names_what_it_exports():
    code = ("import sys, offramp; print(offramp.__version__); "
            "print(sorted(m for m in ('scipy', 'torch', 'pandas', 'simpy', 'offramp.twins') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] and out[1] == "[]"
    assert set(offramp.__all__) <= set(dir(offramp))
    with pytest.raises(AttributeError, match="no attribute 'simulat'"):
        offramp.simulat  # noqa: B018


def test_traces_and_profiles_load_by_name_or_path(tmp_path):
    by_name = offramp.load_trace("fmnist-resnet")
    assert by_name.source and offramp.load_trace(by_name.source).n_samples == by_name.n_samples
    prof = offramp.load_profile("fmnist-resnet-cpu")
    assert offramp.load_profile(prof.source).rows == prof.rows
    with pytest.raises(InputError):
        offramp.load_trace(tmp_path / "missing.npz")


def test_simulate_gives_what_the_command_prints(tmp_path, capsys):
    path = _file(tmp_path)
    assert main(["simulate", str(path), "-o", str(tmp_path / "run"), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)["metrics"]
    run = offramp.simulate(path)
    assert {k: v["mean"] for k, v in cli.items()} == pytest.approx(
        run.summary.to_frame()["mean"].to_dict(), nan_ok=True, rel=0, abs=0)
    # A policy fitted once gives the same run as the study's own fit.
    again = offramp.simulate(path, policy=offramp.fit_policy(path))
    pd.testing.assert_frame_equal(again.requests(), run.requests())
    run.write(tmp_path / "api-run")
    assert (pd.read_parquet(tmp_path / "api-run" / "requests.parquet")["latency_ms"]
            == pd.read_parquet(tmp_path / "run" / "requests.parquet")["latency_ms"]).all()


def test_studies_from_mappings_take_fields_by_the_set_rule(tmp_path):
    study = offramp.load_study(STUDY, {"server.max_batch": 8})
    assert study.config.server.max_batch == 8
    none = study.with_fields({"policy.name": "none"})  # the entropy fields go with it
    assert none.to_dict()["policy"] == {"name": "none"}
    with pytest.raises(InputError) as err:
        study.with_fields({"server.max_batch": 0})
    assert err.value.field == "server.max_batch"
    # Saved with its files' paths absolute, a study runs from any folder.
    local = dict(STUDY, trace={"path": "t.npz"})
    (tmp_path / "t.npz").write_bytes(Path(offramp.load_trace("fmnist-resnet").source).read_bytes())
    saved = offramp.Study(offramp.load_study(local).config, tmp_path).save(tmp_path / "s.yaml")
    assert yaml.safe_load(saved.read_text())["trace"]["path"] == str(tmp_path / "t.npz")


def test_capacity_gives_what_the_command_prints(tmp_path, capsys):
    path = _file(tmp_path)
    assert main(["capacity", str(path), "--slo-p99-ms", "20", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)["study"]
    cap = offramp.capacity(path, slo_p99_ms=20)
    assert cap.capacity_rps == cli["capacity_rps"]
    assert cap.at_capacity["latency_p99_ms"] == cli["at_capacity"]["latency_p99_ms"]
    with pytest.raises(InputError, match="slo_p99_ms"):
        offramp.capacity(path)  # this study has no slo section
    priced = offramp.capacity(path, slo_p99_ms=20, cost_per_replica_hour=3.0)
    assert priced.at_capacity["cost_per_million"] == pytest.approx(
        3.0 / (priced.capacity_rps * 3600) * 1e6)


def test_sweep_of_a_python_study_writes_what_it_ran(tmp_path):
    study = offramp.load_study(STUDY, {"run.requests": 1000, "run.replications": 1})
    out = tmp_path / "sw"
    frame = offramp.sweep(study, {"server.max_batch": [4, 16]}, out, workers=1)
    assert frame["server.max_batch"].tolist() == [4, 16]
    assert (tmp_path / "sw.study.yaml").exists() and (tmp_path / "sw.grid.yaml").exists()
    assert main(["sweep", str(tmp_path / "sw.study.yaml"), "--grid", str(tmp_path / "sw.grid.yaml"),
                 "-o", str(tmp_path / "cli"), "--workers", "1", "--quiet"]) == 0
    pd.testing.assert_frame_equal(frame, pd.read_parquet(tmp_path / "cli" / "sweep.parquet"))
    assert offramp.report(out).name == "report.html"


def test_the_study_twins_give_what_their_commands_print(tmp_path, capsys):
    # concurrency, pipeline and frontier: the same rows as the commands' --json.
    path = _file(tmp_path, {**STUDY, "run": {"requests": 1500, "replications": 1}})
    assert main(["concurrency", str(path), "--clients", "1,8", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    rows = offramp.concurrency(path, [1, 8])
    assert rows["throughput_rps"].tolist() == pytest.approx([r["throughput_rps"] for r in cli],
                                                            rel=1e-9)  # JSON keeps 10 digits
    assert offramp.concurrency(path, "1,8")["concurrency"].tolist() == [1, 8]
    assert main(["pipeline", "examples/capacity-fmnist.yaml", "--gpus", "2,4", "--json"]) == 0
    assert offramp.pipeline("examples/capacity-fmnist.yaml", [2, 4]) == json.loads(
        capsys.readouterr().out)
    data = Path(__file__).parent / "data"
    trace, profile = data / "synthetic-trace.npz", data / "synthetic-profile.json"
    assert main(["frontier", "--trace", str(trace), "--profile", str(profile), "--eenet-fits",
                 "1", "--eenet-epochs", "20", "-o", str(tmp_path / "f"), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    got = offramp.frontier(trace, profile, tmp_path / "g", eenet_fits=1, eenet_epochs=20)
    assert got.points["test_accuracy"].tolist() == pytest.approx(
        [p["test_accuracy"] for p in cli["points"]], rel=1e-9)
    assert len(got.comparison) == len(cli["budgets"])
    assert (tmp_path / "g" / "synthetic-trace-frontier.csv").exists()
