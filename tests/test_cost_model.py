"""One cost model for every command: a study names the calibration (`profile.costs`), the
default is the most calibrated one the profile holds, and simulate, fit and the run summary
all use and say the same one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import needs_fmnist

from offramp.analysis.cli import main
from offramp.common.errors import InputError
from offramp.core.modes import CostModel
from offramp.policies.costs import exit_costs
from offramp.profiling.latency import calibrations, stage_costs
from offramp.profiling.shipped import resolve_profile
from offramp.profiling.synthetic import synthetic_profile


def test_a_profile_gives_the_calibrations_it_holds():
    plain = synthetic_profile()
    loop = synthetic_profile(loop_stages=True)
    served = synthetic_profile(loop_stages=True, served_costs=True)
    assert calibrations(plain) == [CostModel.ISOLATED]
    assert calibrations(loop) == [CostModel.ISOLATED, CostModel.IN_LOOP]
    assert calibrations(served) == [CostModel.ISOLATED, CostModel.IN_LOOP, CostModel.SERVED]
    # Unset: the most calibrated one held.
    assert stage_costs(plain).costs is CostModel.ISOLATED
    assert stage_costs(loop).costs is CostModel.IN_LOOP
    assert stage_costs(served).costs is CostModel.SERVED
    assert stage_costs(served, "in_loop").costs is CostModel.IN_LOOP
    with pytest.raises(InputError, match="holds no served calibration.*profile calibrate"):
        stage_costs(loop, "served")
    with pytest.raises(InputError, match="holds no in_loop calibration"):
        stage_costs(plain, CostModel.IN_LOOP)


def _study(tmp_path, **profile):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "trace": {"path": "fmnist-resnet"},
        "profile": {"path": "fmnist-resnet-cpu", **profile},
        "policy": {"name": "entropy", "tolerance_pct": 99}, "workload": {"rate_rps": 600.0},
        "run": {"requests": 3000, "replications": 2}}))
    return path


def _summary(tmp_path, name, *args):
    assert main(["simulate", str(_study(tmp_path)), "-o", str(tmp_path / name), "--json",
                 *args]) == 0
    return json.loads((tmp_path / name / "summary.json").read_text())


def test_simulate_uses_and_says_the_cost_model(tmp_path):
    # The shipped fmnist profile is calibrated on the real loop: studies default to that.
    default = _summary(tmp_path, "default")
    assert default["stage_costs"]["model"] == "served"
    assert default["stage_costs"]["profile"].endswith("fmnist-resnet-cpu.json")
    assert default["stage_costs"]["calibration"]["fitted_on"]["modes"] == ["none", "keep", "shrink"]
    loop = _summary(tmp_path, "loop", "--set", "profile.costs=in_loop")
    iso = _summary(tmp_path, "iso", "--set", "profile.costs=isolated")
    assert (loop["stage_costs"]["model"], iso["stage_costs"]["model"]) == ("in_loop", "isolated")
    # Inside the loop the stages cost more than the profiler timed them alone.
    p50 = {s["stage_costs"]["model"]: s["metrics"]["latency_p50_ms"]["mean"] for s in (loop, iso)}
    assert p50["in_loop"] > p50["isolated"]
    # A profile without a served calibration (MiniLM's, its served fit taken out) cannot be
    # asked for one.
    doc = json.loads(Path(resolve_profile("rt-minilm6-cpu").source).read_text())
    del doc["meta"]["served_costs"]
    (tmp_path / "bare.json").write_text(json.dumps(doc))
    assert main(["simulate", str(_study(tmp_path)), "-o", str(tmp_path / "x"),
                 "--set", "trace.path=rt-minilm6", "--set", f"profile.path={tmp_path / 'bare.json'}",
                 "--set", "profile.costs=served"]) == 2


def test_fit_takes_its_costs_from_the_same_model(tmp_path, capsys):
    profile = resolve_profile("fmnist-resnet-cpu")
    for extra, model in (([], CostModel.SERVED), (["--costs", "isolated"], CostModel.ISOLATED)):
        capsys.readouterr()
        assert main(["fit", "--trace", "fmnist-resnet", "--profile", "fmnist-resnet-cpu",
                     "--policy", "maxprob", "--param", "budget_ms=3.0", "--json",
                     "-o", str(tmp_path / f"{model.value}.json"), *extra]) == 0
        report = json.loads(capsys.readouterr().out)["report"]
        want = exit_costs(stage_costs(profile, model), 1)
        assert np.allclose(report["costs_ms"], want)


def test_an_analytic_service_takes_no_costs(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump({"profile": {"kind": "exponential", "costs": "in_loop"},
                                    "server": {"exit_mode": "none"}, "policy": {"name": "none"}}))
    assert main(["simulate", str(path), "-o", str(tmp_path / "o")]) == 2


@needs_fmnist
def test_profile_calibrate_stores_a_served_model_that_studies_then_use(tmp_path, capsys):
    out = tmp_path / "cal.json"
    import offramp.traces

    weights = str(Path(offramp.traces.__file__).parent / "data" / "fmnist-resnet.pt")
    assert main(["profile", "calibrate", "fmnist-resnet-cpu", "-o", str(out), "--loads", "0.5",
                 "--modes", "shrink", "--requests", "400", "--served-seconds", "0",
                 "--checkpoint", weights, "--quiet"]) == 0
    from offramp.profiling.format import load_profile

    prof = load_profile(out)
    fitted = prof.meta["served_costs"]["fitted_on"]
    assert fitted["loads"] == [0.5] and fitted["modes"] == ["shrink"]
    assert fitted["streams"] == 2 and fitted["device"] == "cpu" and fitted["max_batch"] == 32
    assert fitted["checkpoint"] == weights  # the real model's weights, where they are
    assert 0 < fitted["busy"]["shrink-L0"] < 1
    # The rows are the profiler's; the calibration is added, and studies now default to it.
    assert prof.rows == resolve_profile("fmnist-resnet-cpu").rows
    assert calibrations(prof)[-1] is CostModel.SERVED
    assert main(["simulate", str(_study(tmp_path)), "-o", str(tmp_path / "run"), "--json",
                 "--set", f"profile.path={out}"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stage_costs"]["model"] == "served"
    assert summary["stage_costs"]["calibration"]["fitted_on"]["loads"] == [0.5]


@needs_fmnist
def test_relevel_moves_the_shipped_tables_levels_to_a_stream_served_now(tmp_path, capsys):
    # A short stream of the real loop re-levels the shipped calibration: every stage moved by
    # one factor (its shape in batch size kept), what it was re-levelled on recorded, and the
    # calibration it keeps the shape of still named.
    import offramp.traces

    out = tmp_path / "relevel.json"
    weights = str(Path(offramp.traces.__file__).parent / "data" / "fmnist-resnet.pt")
    assert main(["profile", "calibrate", "fmnist-resnet-cpu", "--relevel", "-o", str(out),
                 "--requests", "400", "--served-seconds", "0", "--checkpoint", weights]) == 0
    assert "re-levelled on 2 streams" in capsys.readouterr().out
    from offramp.profiling.format import load_profile

    shipped = resolve_profile("fmnist-resnet-cpu").meta["served_costs"]
    served = load_profile(out).meta["served_costs"]
    rel = served["relevelled"]
    assert rel["loads"] == [0.3] and rel["modes"] == ["shrink"] and rel["streams"] == 2
    assert "segment 0" in rel["own"] and "head 0" in rel["own"]
    assert served["fitted_on"] == shipped["fitted_on"]
    for key, rows in served["stages"].items():
        ratio = [a[1] / b[1] for a, b in zip(rows, shipped["stages"][key], strict=True)]
        assert np.allclose(ratio, rel["factor"][key], rtol=1e-3), key
        assert 0.2 < rel["factor"][key] < 5  # a level, not a different table
    # Every prediction made with it says it was re-levelled, and where.
    assert main(["simulate", str(_study(tmp_path)), "-o", str(tmp_path / "run"), "--json",
                 "--set", f"profile.path={out}"]) == 0
    costs = json.loads((tmp_path / "run" / "summary.json").read_text())["stage_costs"]
    assert costs["calibration"]["relevelled"]["loads"] == [0.3]
    assert costs["machine"] == rel["machine"]["cpu"]
    capsys.readouterr()
    assert main(["profile", "show", str(out)]) == 0
    assert "re-levelled " + rel["date"][:10] + " on 2 streams" in capsys.readouterr().out


def test_relevel_needs_a_served_table(tmp_path, capsys):
    from offramp.profiling.format import save_profile

    save_profile(synthetic_profile(), tmp_path / "p.json")
    assert main(["profile", "calibrate", str(tmp_path / "p.json"), "--relevel", "-o",
                 str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "meta.served_costs" in err and "holds no served table" in err
    assert not (tmp_path / "o.json").exists()


def test_a_profile_too_noisy_to_trust_is_named(tmp_path):
    # Synthetic profile (a unit-test input): every stage's p99 is 10x its p50.
    from offramp.profiling.format import save_profile
    from offramp.profiling.latency import noisy_stages

    noisy = synthetic_profile(n_exits=4, spread=9.0)
    assert noisy_stages(stage_costs(noisy), 8)[0].startswith("head 0 at batch")
    assert noisy_stages(stage_costs(synthetic_profile(spread=0.1)), 8) == []
    from offramp.traces.format import save_trace
    from offramp.traces.synthetic import synthetic_trace

    save_trace(synthetic_trace(400, seed=1, n_exits=4), tmp_path / "t.npz")
    save_profile(noisy, tmp_path / "p.json")
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"trace": {"path": "t.npz"},
                                     "profile": {"path": "p.json", "latency": "sampled"},
                                     "policy": {"name": "none"}, "server": {"exit_mode": "none"},
                                     "workload": {"rate_rps": 200.0},
                                     "run": {"requests": 300, "replications": 1}}))
    assert main(["simulate", str(study), "-o", str(tmp_path / "run"), "--json"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stage_costs"]["noisy_stages"]


def test_a_profile_is_loaded_once_per_file_version_and_tables_built_once(tmp_path):
    # Variants of one study share the loaded profile and its stage tables; a profile file that
    # changes on disk is read again (its size or modification time moved).
    import os

    from offramp.analysis.study.config import parse_config
    from offramp.analysis.study.resolve import build_service, load_study_profile
    from offramp.profiling.format import save_profile
    from offramp.profiling.synthetic import synthetic_profile
    from offramp.traces.synthetic import synthetic_trace

    trace = synthetic_trace(200)
    path = tmp_path / "p.json"
    save_profile(synthetic_profile(segment_ms=1.0), path)
    cfg = parse_config({"trace": {"path": "x.npz"}, "profile": {"path": str(path)}}, "test")
    first = load_study_profile(cfg, trace)
    assert load_study_profile(cfg, trace) is first
    svc = build_service(cfg, trace, first)
    assert build_service(cfg, trace, first) is svc
    keep = cfg.model_copy(update={"server": cfg.server.model_copy(update={"exit_mode": "keep"})})
    assert build_service(keep, trace, first) is not svc  # another server: its own tables
    for field, value in (("latency", "sampled"), ("costs", "isolated")):
        other = cfg.model_copy(update={"profile": cfg.profile.model_copy(update={field: value})})
        assert build_service(other, trace, first) is not svc, field
    sized = cfg.model_copy(update={"server": cfg.server.model_copy(
        update={"engine_sizes": [1, 2, 4, 8, 16, 32, 64]})})
    assert build_service(sized, trace, first) is not svc
    save_profile(synthetic_profile(segment_ms=2.0), path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = load_study_profile(cfg, trace)
    assert second is not first
    assert build_service(cfg, trace, second).base[1][1] > svc.base[1][1]  # segment 0, b = 1


def test_calibrate_names_a_missing_or_conflicting_checkpoint(tmp_path, capsys):
    args = ["profile", "calibrate", "fmnist-resnet-cpu", "-o", str(tmp_path / "c.json"),
            "--checkpoint", str(tmp_path / "nope.pt")]
    assert main(args) == 2
    assert "--checkpoint" in capsys.readouterr().err and not (tmp_path / "c.json").exists()
    (tmp_path / "w.pt").write_bytes(b"x")
    assert main([*args[:-1], str(tmp_path / "w.pt"), "--model-factory", "m:f",
                 "--data-factory", "m:g"]) == 2
    assert "--model-factory" in capsys.readouterr().err


def test_a_prediction_names_the_machine_its_costs_describe():
    # MiniLM's served calibration ran on another host than its profiled rows: a prediction on
    # the served model names that host; on the rows' models, the rows' one.
    from offramp.analysis.report.tables import costs_line
    from offramp.profiling.latency import describe_costs

    served = describe_costs(stage_costs(resolve_profile("rt-minilm6-cpu")))
    assert served["model"] == "served" and served["device"] == "AMD EPYC"
    assert served["machine"].startswith("Intel") and " on Intel" in costs_line(served)
    iso = describe_costs(stage_costs(resolve_profile("rt-minilm6-cpu"), CostModel.ISOLATED))
    assert iso["machine"] == "AMD EPYC" and " on Intel" not in costs_line(iso)
    fm = describe_costs(stage_costs(resolve_profile("fmnist-resnet-cpu")))
    assert fm["machine"] == fm["device"]  # its calibration did not record the CPU
