"""Replayed arrivals: a saved run replays to identical per-request results; bad files are one error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from offramp.analysis.cli import main
from offramp.common.errors import InputError
from offramp.sim.config import WorkloadConfig
from offramp.sim.workload import load_arrivals, replay_arrivals

DATA = Path(__file__).parent / "data"


def study(tmp_path: Path, workload: dict, routing: str = "round_robin") -> Path:
    shutil.copy(DATA / "synthetic-trace.npz", tmp_path / "trace.npz")
    shutil.copy(DATA / "synthetic-profile.json", tmp_path / "profile.json")
    cfg = {"trace": {"path": "trace.npz"}, "profile": {"path": "profile.json", "latency": "sampled"},
           "workload": workload, "server": {"replicas": 2, "routing": routing},
           "policy": {"name": "entropy", "tolerance_pct": 99},
           "run": {"requests": 3000, "replications": 1, "seed": 4}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("suffix, routing", [(".csv", "random"), (".parquet", "jsq")])
def test_replay_of_a_saved_poisson_run_is_identical(tmp_path, suffix, routing, capsys):
    saved = tmp_path / f"arrivals{suffix}"
    first = study(tmp_path, {"kind": "poisson", "rate_rps": 9000}, routing)
    assert main(["simulate", str(first), "-o", str(tmp_path / "a"), "--json",
                 "--save-arrivals", str(saved)]) == 0
    again = study(tmp_path, {"kind": "replay", "path": saved.name}, routing)
    assert main(["simulate", str(again), "-o", str(tmp_path / "b"), "--json"]) == 0
    capsys.readouterr()
    a = pd.read_parquet(tmp_path / "a" / "requests.parquet")
    b = pd.read_parquet(tmp_path / "b" / "requests.parquet")
    assert len(a) == 3000
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_rate_scale_divides_times_and_missing_ids_are_drawn(tmp_path):
    f = tmp_path / "a.csv"
    pd.DataFrame({"arrival_s": [0.0, 0.5, 1.0, 2.0]}).to_csv(f, index=False)
    test_ids = np.array([3, 5, 8])
    arr, ids = replay_arrivals(WorkloadConfig(kind="replay", path=str(f), rate_scale=2.0),
                               test_ids, np.random.default_rng(0), n=None, duration_s=None)
    assert arr.tolist() == [0.0, 0.25, 0.5, 1.0]
    assert np.isin(ids, test_ids).all() and ids.size == 4
    arr, _ = replay_arrivals(WorkloadConfig(kind="replay", path=str(f)), test_ids,
                             np.random.default_rng(0), n=3, duration_s=None)
    assert arr.tolist() == [0.0, 0.5, 1.0]
    arr, _ = replay_arrivals(WorkloadConfig(kind="replay", path=str(f)), test_ids,
                             np.random.default_rng(0), n=None, duration_s=1.0)
    assert arr.tolist() == [0.0, 0.5]


@pytest.mark.parametrize("frame, field, words", [
    ({"arrival_s": [0.0, 0.2, 0.1]}, "arrival_s", "not sorted: row 2 (0.1) comes before row 1"),
    ({"arrival_s": [-0.1, 0.2]}, "arrival_s", "row 0: -0.1 is not a time >= 0"),
    ({"arrival_s": [-0.1, -0.2]}, "arrival_s", "row 0: -0.1 is not a time >= 0"),
    ({"arrival_s": [0.0, float("nan")]}, "arrival_s", "row 1"),
    ({"arrival_s": []}, "arrival_s", "no requests"),
    ({"time": [0.0]}, "arrival_s", "column missing"),
    ({"arrival_s": [0.0, 0.1], "sample_id": [1, 1.5]}, "sample_id", "row 1: 1.5 is not a sample id"),
])
def test_bad_replay_files_name_file_field_and_row(tmp_path, frame, field, words):
    f = tmp_path / "bad.csv"
    pd.DataFrame(frame).to_csv(f, index=False)
    with pytest.raises(InputError) as err:
        load_arrivals(f)
    msg = str(err.value)
    assert msg.startswith(str(f.resolve())) and f"field '{field}'" in msg and words in msg


def test_sample_outside_the_test_split_is_one_cli_error(tmp_path, capsys):
    from offramp.traces.format import load_trace

    trace = load_trace(DATA / "synthetic-trace.npz")
    val_id = int(trace.indices("val")[0])
    f = tmp_path / "arr.csv"
    pd.DataFrame({"arrival_s": [0.0, 0.001], "sample_id": [int(trace.indices("test")[0]), val_id]}
                 ).to_csv(f, index=False)
    path = study(tmp_path, {"kind": "replay", "path": "arr.csv"})
    assert main(["simulate", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"row 1: sample {val_id} is not in the trace's test split" in err[0]
    assert "arr.csv" in err[0] and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="needs a path"):
        WorkloadConfig(kind="replay")
    assert main(["simulate", str(study(tmp_path, {"kind": "replay", "path": "none.csv"})),
                 "-o", str(tmp_path / "o2")]) == 2
    assert "no such replay file" in capsys.readouterr().err
