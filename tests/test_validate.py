"""offramp validate on this CPU: a short real run of the shipped model, checked for soundness
(every request served once, in order, within the batcher's rule, exits as the policy says);
no timing asserts. The calibration's search on a known busy-fraction curve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import needs_fmnist

from offramp.analysis.cli import main
from offramp.profiling.real_runs import calibrate_rate
from offramp.traces.shipped import resolve_trace


def test_calibration_finds_the_rate_of_a_known_curve():
    # Busy fraction u(r) = 1 - exp(-r / 800): concave, as batching makes it.
    curve = lambda r: 1 - np.exp(-r / 800)  # noqa: E731
    for target in (0.3, 0.6, 0.9):
        rate, probes = calibrate_rate(curve, target, rate0=200.0, steps=6, tol=0.01)
        assert abs(curve(rate) - target) <= 0.01 * target + 1e-9, (target, probes)
        assert len(probes) <= 7


@needs_fmnist
def test_a_short_real_validation_is_sound(tmp_path, capsys):
    from offramp.policies import build_policy
    from offramp.traces.format import load_trace

    study = tmp_path / "v.yaml"
    study.write_text(yaml.safe_dump({
        "trace": {"path": "fmnist-resnet"}, "profile": {"path": "fmnist-resnet-cpu"},
        "server": {"max_batch": 8, "max_wait_ms": 2.0},
        "policy": {"name": "entropy", "tolerance_pct": 99}, "run": {"seed": 3}}))
    out = tmp_path / "val"
    assert main(["validate", str(study), "--rates", "300,500", "--modes", "none,keep,shrink",
                 "--repeats", "2", "--requests", "800", "--profile", "fmnist-resnet-cpu",
                 "--served-requests", "300", "--served-seconds", "0.9", "--sim-replications", "2",
                 "--quiet",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "latency_p99_ms" in printed and "exit_match" in printed
    trace = load_trace(resolve_trace("fmnist-resnet"))
    policy = build_policy({"name": "entropy", "tolerance_pct": 99}, trace)
    manifest = json.loads((out / "real" / "manifest.json").read_text())
    assert len(manifest["runs"]) == 12 and {r["repeat"] for r in manifest["runs"]} == {0, 1}
    # A served stream next to every repeat, on arrivals of its own.
    assert sorted(s["file"] for s in manifest["served"]) == sorted(
        f"served-{r['key']}-r{r['repeat']}.npz" for r in manifest["runs"])
    for run in manifest["runs"] + manifest["served"]:
        z = np.load(out / "real" / run["file"])
        n = z["arrival"].size
        # Served streams: 300 requests, or 0.9 s worth where that is more (450 at 500 req/s).
        assert n == (800 if run in manifest["runs"] else 300 if run["load"] == 0 else 450)
        # Every request served exactly once, in a batch that respects the batcher's rule.
        assert np.isfinite(z["finish"]).all() and (z["batch"] >= 0).all()
        assert np.array_equal(np.bincount(z["batch"]), z["batch_sizes"][:, 0])
        assert (z["arrival"] <= z["dispatch"]).all() and (z["dispatch"] <= z["finish"]).all()
        assert (z["batch_sizes"] <= 8).all()
        assert np.array_equal(z["dispatch"], z["batch_dispatch"][z["batch"]])
        reason, size = z["batch_reason"], z["batch_sizes"][:, 0]
        assert (size[reason == 0] == 8).all()
        oldest = np.array([z["arrival"][z["batch"] == b].min() for b in range(size.size)])
        assert (z["batch_dispatch"][reason == 1] >= oldest[reason == 1] + 0.002).all()
        # The last batch goes once the stream has ended (or full), not after a deadline.
        assert reason[-1] in (0, 2) and (reason[:-1] != 2).all()
        # Exits are the policy's (the trace's exits for these samples).
        want = policy.exit_index(trace, z["sample"]) if run["mode"] != "none" else \
            np.full(n, trace.n_exits - 1)
        assert (z["exit"] == want).mean() >= 0.995
        assert (z["pred"] == trace.pred[z["sample"], z["exit"]]).mean() >= 0.995
    doc = json.loads((out / "validation.json").read_text())
    stats = {(r["key"], r["stat"]) for r in doc["table"]}
    assert {("shrink-L0", "latency_p99_ms"), ("keep-L0", "exit_match")} <= stats
    assert (out / "validation.png").stat().st_size > 0
    # Stage costs fitted on the served streams, written as a profile of their own.
    from offramp.profiling.format import load_profile

    assert doc["served_costs"]["sources"] == [s["file"] for s in manifest["served"]]
    fitted = load_profile(out / "served-profile.json")
    assert fitted.meta["served_costs"]["stage_times"] > 0
    # ... and per load, on that load's served streams only; each load simulated with its own.
    for li in (0, 1):
        own = [s["file"] for s in manifest["served"] if s["load"] == li]
        assert len(own) == 6
        assert load_profile(out / f"served-profile-L{li}.json").meta["served_costs"][
            "sources"] == own == doc["served_costs_by_load"][f"L{li}"]["sources"]
    assert {(r["key"][-2:], r["costs"]) for r in doc["table"]} == {
        ("L0", "served-profile-L0.json"), ("L1", "served-profile-L1.json")}
    assert "stage costs: served-profile-L0.json, served-profile-L1.json" in printed
    # What is validated is what users run: the simulated side of each (mode, load) is a plain
    # study (sim-study-KEY.yaml: the calibrated profile, the real arrivals replayed), and
    # `offramp simulate` on it gives validate's simulated side to the request.
    import pandas as pd

    sim = pd.read_parquet(out / "sim.parquet")
    for key in ("shrink-L0", "keep-L1"):
        study_k = yaml.safe_load((out / f"sim-study-{key}.yaml").read_text())
        assert Path(study_k["profile"]["path"]).name == f"served-profile-L{key[-1]}.json"
        assert main(["simulate", str(out / f"sim-study-{key}.yaml"), "-o",
                     str(tmp_path / f"sim-{key}"), "--json"]) == 0
        users = pd.read_parquet(tmp_path / f"sim-{key}" / "requests.parquet")
        ours = sim[sim["key"] == key]
        assert len(users) == len(ours) > 0
        for col in ("arrival_s", "dispatch_s", "finish_s", "exit_index", "sample_id"):
            assert np.array_equal(users[col].to_numpy(), ours[col].to_numpy()), col
        summary = json.loads((tmp_path / f"sim-{key}" / "summary.json").read_text())
        assert summary["stage_costs"]["model"] == "served"
    # A load missing a served stream, or --pooled-served: the table from every load's.
    short = json.loads((out / "real" / "manifest.json").read_text())
    short["served"] = [s for s in short["served"] if s["file"] != "served-keep-L1-r1.npz"]
    (out / "real" / "manifest.json").write_text(json.dumps(short))
    assert main(["validate", str(study), "--real-from", str(out), "--quiet"]) == 0
    doc = json.loads((out / "validation.json").read_text())
    assert {(r["key"][-2:], r["costs"]) for r in doc["table"]} == {
        ("L0", "served-profile-L0.json"), ("L1", "served-profile.json")}
    assert main(["validate", str(study), "--real-from", str(out), "--pooled-served"]) == 0
    doc = json.loads((out / "validation.json").read_text())
    assert {r["costs"] for r in doc["table"]} == {"served-profile.json"}
    assert doc["served_costs_by_load"] == {}
    # Held out: one table fitted on the served streams of (300 req/s, shrink) only; every
    # other cell is judged on points the cost model never saw.
    assert main(["validate", str(study), "--real-from", str(out), "--calibrate-on",
                 "load=300,mode=shrink", "--quiet"]) == 0
    doc = json.loads((out / "validation.json").read_text())
    assert doc["calibrate_on"] == ["shrink-L0"]
    assert doc["served_costs"]["sources"] == ["served-shrink-L0-r0.npz", "served-shrink-L0-r1.npz"]
    assert {(r["key"], r["held_out"]) for r in doc["table"]} == {
        (key, key != "shrink-L0") for key in {r["key"] for r in doc["table"]}}
    assert {r["costs"] for r in doc["table"]} == {"served-profile.json"}
    capsys.readouterr()
    assert main(["validate", str(study), "--real-from", str(out), "--calibrate-on",
                 "load=0.45"]) == 2
    assert "names none of this folder's operating points" in capsys.readouterr().err
    # The comparison alone, later, from the same folder; and with the profiler's costs.
    assert main(["validate", str(study), "--real-from", str(out)]) == 0
    assert main(["validate", str(study), "--real-from", str(out), "--profiler-costs"]) == 0
    doc = json.loads((out / "validation.json").read_text())
    # The given profile's own costs (the shipped one is calibrated: its served table, not one
    # fitted on this folder's streams).
    given = load_profile(out / "real" / "profile.json").meta.get("served_costs")
    assert doc["served_costs"] == given and {r["costs"] for r in doc["table"]} == {"profiler"}
    assert given is not None and given["sources"] != [s["file"] for s in manifest["served"]]
    # The level the real loop ran its segments at against that served table, per point
    # (tests/test_served_level.py: what it measures).
    from offramp.analysis.validation.io import read_run
    from offramp.profiling.served_level import segment_level

    levels = {r["key"]: r["level"] for r in doc["table"]}
    assert len(levels) == 6 and all(0.3 < v < 3 for v in levels.values())
    runs = [r for r in manifest["runs"] if r["key"] == "keep-L1"]
    each = [segment_level(given, [read_run(out / "real" / r["file"], trace)]) for r in runs]
    assert levels["keep-L1"] == pytest.approx(float(np.median(each)))
    # The Python twin judges the same folder to the same table.
    import offramp

    twin = offramp.validate(study, out, real_from=out, profiler_costs=True)
    assert json.loads(json.dumps(twin["doc"]["table"], default=str)) == \
        json.loads((out / "validation.json").read_text())["table"]
    # Another plan into the same folder: one line, and nothing of the folder touched.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    assert main(["validate", str(study), "--rates", "300", "--repeats", "1", "--requests",
                 "100", "--profile", "fmnist-resnet-cpu", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different plan" in err[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@needs_fmnist
def test_rebatch_is_served_and_judged_like_the_other_modes(tmp_path, capsys):
    """The real loop runs rebatch (stage queues on one device); validate judges it, and its
    simulated side is a plain study that `offramp simulate` reproduces to the request."""
    import pandas as pd

    from offramp.policies import build_policy
    from offramp.traces.format import load_trace

    study = tmp_path / "v.yaml"
    study.write_text(yaml.safe_dump({
        "trace": {"path": "fmnist-resnet"}, "profile": {"path": "fmnist-resnet-cpu"},
        "server": {"max_batch": 8, "max_wait_ms": 2.0, "exit_mode": "rebatch",
                   "discipline": "oldest_first"},
        "policy": {"name": "entropy", "tolerance_pct": 99}, "run": {"seed": 3}}))
    out = tmp_path / "val"
    assert main(["validate", str(study), "--rates", "400", "--modes", "rebatch", "--repeats",
                 "2", "--requests", "500", "--profile", "fmnist-resnet-cpu", "--profiler-costs",
                 "--served-requests", "0", "--sim-replications", "1", "--quiet",
                 "-o", str(out)]) == 0
    assert "rebatch" in capsys.readouterr().out
    plan = json.loads((out / "plan.json").read_text())
    assert (plan["modes"], plan["discipline"], plan["stage_max_wait_ms"]) == (
        ["rebatch"], "oldest_first", None)
    trace = load_trace(resolve_trace("fmnist-resnet"))
    policy = build_policy({"name": "entropy", "tolerance_pct": 99}, trace)
    manifest = json.loads((out / "real" / "manifest.json").read_text())
    for run in manifest["runs"]:
        z = np.load(out / "real" / run["file"])
        # every request once, with the policy's exit, in one stage-0 batch
        assert np.isfinite(z["finish"]).all() and (z["batch_stage"][z["batch"]] == 0).all()
        assert (z["exit"] == policy.exit_index(trace, z["sample"])).mean() >= 0.995
        assert (z["arrival"] <= z["dispatch"]).all() and (z["dispatch"] < z["finish"]).all()
        assert (z["batch_dispatch"][1:] >= z["batch_finish"][:-1]).all()
        # later stages ran as batches of their own (tests/test_rebatch_loop.py: gathered across)
        assert (z["batch_stage"] > 0).any() and (z["batch_sizes"] <= 8).all()
    doc = json.loads((out / "validation.json").read_text())
    assert {r["stat"] for r in doc["table"] if r["key"] == "rebatch-L0"} >= {
        "latency_p50_ms", "latency_p99_ms", "utilisation", "exit_match"}
    study_k = yaml.safe_load((out / "sim-study-rebatch-L0.yaml").read_text())
    assert study_k["server"]["exit_mode"] == "rebatch"
    assert study_k["server"]["discipline"] == "oldest_first"
    assert main(["simulate", str(out / "sim-study-rebatch-L0.yaml"), "-o", str(tmp_path / "s"),
                 "--json"]) == 0
    users = pd.read_parquet(tmp_path / "s" / "requests.parquet")
    ours = pd.read_parquet(out / "sim.parquet")
    for col in ("arrival_s", "dispatch_s", "finish_s", "exit_index"):
        assert np.array_equal(users[col].to_numpy(), ours[col].to_numpy()), col


def test_cuda_absent_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    study = tmp_path / "v.yaml"
    study.write_text("policy: {name: none}\n")
    assert main(["validate", str(study), "--device", "cuda", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]
    assert not (tmp_path / "o").exists()
