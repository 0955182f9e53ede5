"""`offramp concurrency`: the perf_analyzer view (throughput and latency against the number of
closed-loop clients), checked against Little's law and the batching rule."""

from __future__ import annotations

import json

import pytest
import yaml

from offramp.analysis.cli import main
from offramp.analysis.studies.concurrency import parse_clients
from offramp.common.errors import InputError

STUDY = {"trace": {"path": "fmnist-resnet"}, "profile": {"path": "fmnist-resnet-cpu"},
         "policy": {"name": "entropy", "tolerance_pct": 99}, "workload": {"rate_rps": 900.0},
         "server": {"max_batch": 8}, "run": {"requests": 3000, "replications": 2}}


def test_client_counts_parse_and_refuse_nonsense():
    assert parse_clients("1-64:x2") == [1, 2, 4, 8, 16, 32, 64]
    assert parse_clients("4,1,2,2") == [1, 2, 4] and parse_clients("2-8:3") == [2, 5, 8]
    for bad in ("0", "a", "1-8:x1", ""):
        with pytest.raises(InputError):
            parse_clients(bad)


def test_concurrency_obeys_littles_law_and_the_batch_bound(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    assert main(["concurrency", str(study), "--clients", "1,2,4,16,32", "--think-ms", "1",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["concurrency"] for r in rows] == [1, 2, 4, 16, 32]
    for r in rows:
        # N clients, each a request in the system or thinking: N = X (R + Z) (Little's law).
        n = r["throughput_rps"] * (r["latency_mean_ms"] + 1.0) / 1000.0
        assert n == pytest.approx(r["concurrency"], rel=0.03)
        # No batch holds more than the requests outstanding, nor more than max_batch.
        assert r["batch_size_stage_0"] <= min(r["concurrency"], 8) + 1e-9
    assert rows[0]["batch_size_stage_0"] == 1.0  # one client: batches of one
    assert rows[-1]["throughput_rps"] > rows[0]["throughput_rps"]
    assert main(["concurrency", str(study), "--clients", "1,4", "-o", str(tmp_path / "c")]) == 0
    for name in ("concurrency.csv", "concurrency.json", "concurrency.png", "report.html"):
        assert (tmp_path / "c" / name).is_file()
    assert main(["report", str(tmp_path / "c")]) == 0
    assert "offramp concurrency:" in (tmp_path / "c" / "report.html").read_text()
