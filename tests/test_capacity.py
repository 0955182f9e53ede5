"""Capacity search against closed forms, and `offramp capacity` as a user runs it.

M/M/1 (exponential service, mean 1 ms, one request per batch): the sojourn time is
exponential with rate mu - lambda, so p99 <= 10 ms holds up to lambda = mu + ln(0.01) / 10 ms
(539.5 req/s) and a mean <= 5 ms up to mu - 1 / 5 ms (800 req/s). M/D/1 (1 ms fixed): the mean
sojourn is 1 ms + rho / (2 mu (1 - rho)), <= 3 ms up to rho = 0.8 (800 req/s).
"""

from __future__ import annotations

import json
import math

import pytest

from offramp.analysis.cli import main
from offramp.analysis.studies.capacity import find_capacity
from offramp.analysis.study.config import parse_config
from offramp.common.errors import InputError


def _queue(kind: str) -> dict:
    return {"trace": {"path": "fmnist-resnet"}, "profile": {"kind": kind, "mean_ms": 1.0},
            "server": {"max_batch": 1, "max_wait_ms": 0.0, "exit_mode": "none"},
            "workload": {"rate_rps": 300.0},
            "run": {"requests": 40000, "replications": 4, "seed": 1}}


@pytest.mark.parametrize("kind,slo_ms,stat,truth", [
    ("exponential", 10.0, "attainment", 1000 + math.log(0.01) / 0.010),
    ("exponential", 5.0, "mean", 800.0),
    ("deterministic", 3.0, "mean", 800.0),
])
def test_capacity_matches_queueing_theory(kind, slo_ms, stat, truth):
    res = find_capacity(parse_config(_queue(kind)), None, slo_ms, 0.99, stat, rel_tol=0.005)
    assert res.capacity_rps == pytest.approx(truth, rel=0.02)
    assert res.capacity_rps < res.failed_rps <= res.capacity_rps * 1.006
    assert all(p.holds == (p.rate_rps <= res.capacity_rps) for p in res.probes)


def test_capacity_cli_compares_variants(tmp_path, capsys):
    import yaml

    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({
        "trace": {"path": "fmnist-resnet"}, "profile": {"path": "fmnist-resnet-cpu"},
        "server": {"max_batch": 16, "max_wait_ms": 2.0, "exit_mode": "shrink"},
        "policy": {"name": "entropy", "tolerance_pct": 99},
        "workload": {"rate_rps": 400.0}, "run": {"requests": 4000, "replications": 2}}))
    assert main(["capacity", str(study), "--slo-p99-ms", "40", "--tol", "0.05", "--json",
                 "--compare", "server.exit_mode=shrink,server.replicas=2",
                 "--cost-per-replica-hour", "3",
                 "--compare", "server.exit_mode=none,policy.name=none"]) == 0
    doc = json.loads(capsys.readouterr().out)
    shrink = doc["server.exit_mode=shrink,server.replicas=2"]
    none = doc["server.exit_mode=none,policy.name=none"]
    # Early exits with compaction (on two replicas) serve more than the full model on one.
    assert shrink["capacity_rps"] > none["capacity_rps"] > 0
    assert shrink["slo"] == {"latency_ms": 40.0, "statistic": "attainment", "attainment": 0.99}
    # Each capacity explains itself: what holds there, on the study's own run.
    there = shrink["at_capacity"]
    assert there["rate_rps"] == shrink["capacity_rps"] and there["latency_p99_ms"] > 0
    assert sum(there["exit_fractions"]) == pytest.approx(1.0)
    assert none["at_capacity"]["exit_fractions"][-1] == pytest.approx(1.0)  # no exits: all last
    assert shrink["at_capacity"]["policy"]["name"] == "entropy"
    # Priced: a replica-hour of 3 over the requests an hour at the capacity, per million.
    for v, replicas in ((shrink, 2), (none, 1)):
        assert v["at_capacity"]["cost_per_million"] == pytest.approx(
            3 * replicas / (v["capacity_rps"] * 3600) * 1e6)


def test_capacity_writes_a_folder_with_a_plot_and_a_page(tmp_path, capsys):
    import yaml

    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({
        "trace": {"path": "fmnist-resnet"}, "profile": {"path": "fmnist-resnet-cpu"},
        "server": {"max_batch": 16, "max_wait_ms": 2.0, "exit_mode": "shrink"},
        "policy": {"name": "entropy", "tolerance_pct": 99}, "slo": {"latency_ms": 40},
        "workload": {"rate_rps": 400.0}, "run": {"requests": 3000, "replications": 2}}))
    out = tmp_path / "cap"
    assert main(["capacity", str(study), "--tol", "0.05", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "p99 ms there" in text and "accuracy" in text
    doc = json.loads((out / "capacity.json").read_text())
    assert list(doc["variants"]) == ["study"]
    assert (out / "capacity.png").stat().st_size > 0
    assert main(["report", str(out)]) == 0
    assert "offramp capacity" in (out / "report.html").read_text()


def test_capacity_refuses_what_has_no_rate(capsys):
    cfg = parse_config({**_queue("exponential"), "workload": {"kind": "closed", "clients": 4}})
    with pytest.raises(InputError, match="closed loop has no arrival rate"):
        find_capacity(cfg, None, 10.0)
    assert main(["capacity", "nope.yaml", "--slo-p99-ms", "10", "--slo-mean-ms", "3"]) == 2
    assert "exactly one of" in capsys.readouterr().err


def test_capacity_takes_the_study_slo_when_no_bound_is_given(tmp_path, capsys):
    import yaml

    study = tmp_path / "q.yaml"
    study.write_text(yaml.safe_dump({**_queue("exponential"), "slo": {"latency_ms": 10.0},
                                     "run": {"requests": 4000, "replications": 2, "seed": 1}}))
    runs = []
    for extra in ([], ["--slo-p99-ms", "10"]):
        capsys.readouterr()
        assert main(["capacity", str(study), "--json", "--tol", "0.05", *extra]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[0] == runs[1]
    study.write_text(yaml.safe_dump(_queue("exponential")))  # no SLO anywhere: one clear error
    assert main(["capacity", str(study)]) == 2
    assert "slo.latency_ms in the study" in capsys.readouterr().err
