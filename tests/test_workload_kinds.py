"""Every workload kind runs through every command that takes a study: simulate, capacity and
sweep, as a user runs them (replay from a file of recorded arrivals included).

Each workload kind is one frozen class (``sim/workload.py``) that knows its mean rate and how
to run at another; capacity searches that rate, whatever the kind.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from offramp.analysis.cli import main
from offramp.analysis.study.config import parse_config
from offramp.sim.workload import OPEN_KINDS, ClosedLoop, workload_from

BASE = {"trace": {"path": "fmnist-resnet"}, "profile": {"path": "fmnist-resnet-cpu"},
        "server": {"max_batch": 16, "max_wait_ms": 2.0, "exit_mode": "shrink"},
        "policy": {"name": "entropy", "tolerance_pct": 99}, "slo": {"latency_ms": 25.0},
        "run": {"requests": 1500, "replications": 2, "seed": 3}}
KINDS = {
    "poisson": {"kind": "poisson", "rate_rps": 600.0},
    "gamma": {"kind": "gamma", "rate_rps": 600.0, "cv": 2.0},
    "replay": {"kind": "replay", "path": "arrivals.csv"},
    "mmpp": {"kind": "mmpp", "rates_rps": [1500.0, 150.0], "sojourn_s": [0.05, 0.2]},
    "diurnal": {"kind": "diurnal", "rate_rps": 600.0, "amplitude": 0.5, "period_s": 2.0},
    "closed": {"kind": "closed", "clients": 8, "think_ms": 5.0},
}


def _study(tmp_path, kind: str):
    # Synthetic arrivals for the replay kind (a unit-test input): Poisson at 600 req/s.
    times = np.cumsum(np.random.default_rng(0).exponential(1 / 600.0, 4000))
    pd.DataFrame({"arrival_s": times}).to_csv(tmp_path / "arrivals.csv", index=False)
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump({**BASE, "workload": KINDS[kind]}))
    return path


def test_every_kind_is_one_class_with_its_mean_rate():
    assert set(OPEN_KINDS) | {"closed"} == set(KINDS)
    for kind, fields in KINDS.items():
        if kind == "replay":
            continue
        wl = workload_from(parse_config({**BASE, "workload": fields}).workload)
        if isinstance(wl, ClosedLoop):
            continue
        assert type(wl) is OPEN_KINDS[kind]
        # Scaling by k multiplies the mean rate by k; at_rate lands on the rate asked for.
        assert wl.scaled(2.0).mean_rate() == pytest.approx(2 * wl.mean_rate())
        assert wl.at_rate(1234.0).mean_rate() == pytest.approx(1234.0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_simulate_capacity_and_sweep_run_on_every_kind(tmp_path, kind, capsys):
    study = _study(tmp_path, kind)
    assert main(["simulate", str(study), "-o", str(tmp_path / "run"), "--json"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["throughput_rps"]["mean"] > 0

    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"grid": {"server.max_batch": [8, 16]}}))
    assert main(["sweep", str(study), "--grid", str(grid), "-o", str(tmp_path / "sweep"),
                 "--workers", "1", "--quiet"]) == 0
    frame = pd.read_parquet(tmp_path / "sweep" / "sweep.parquet")
    assert sorted(frame["server.max_batch"]) == [8, 16]

    capsys.readouterr()
    rc = main(["capacity", str(study), "--slo-p99-ms", "25", "--tol", "0.05", "--json"])
    out = capsys.readouterr()
    if kind == "closed":  # no arrival rate to search: one clear line, exit 2
        assert rc == 2 and "closed loop has no arrival rate" in out.err
        return
    assert rc == 0
    (res,) = json.loads(out.out).values()
    cap = res["capacity_rps"]
    # One shrink replica of the shipped CPU profile serves on the order of 10^3 req/s.
    assert 100 < cap < 10_000


@pytest.mark.parametrize("kind", ["poisson", "gamma", "mmpp", "diurnal"])
def test_capacity_probes_share_their_random_numbers(kind):
    # The capacity search runs every probe on the same seeds at another rate (at_rate): the
    # same samples in the same order, arrival times scaled (common random numbers).
    import dataclasses

    from offramp.analysis.study.resolve import build_scenario, load_study_trace
    from offramp.sim.config import RunConfig
    from offramp.sim.runner import simulate

    cfg = parse_config({**BASE, "workload": KINDS[kind]})
    trace = load_study_trace(cfg)
    scenario = build_scenario(cfg, trace)
    run = RunConfig(requests=800, replications=2, seed=5)
    slow, fast = (simulate(dataclasses.replace(scenario, workload=scenario.workload.at_rate(r)),
                           run).records for r in (400.0, 800.0))
    for a, b in zip(slow, fast, strict=True):
        assert np.array_equal(a.sample, b.sample)
        if kind in ("poisson", "gamma"):  # gaps drawn whole and scaled: times halve exactly
            np.testing.assert_allclose(b.arrival, a.arrival / 2, rtol=1e-12)
        else:  # rate_scale divides a process drawn on the same stream
            assert b.arrival[-1] < a.arrival[-1]
