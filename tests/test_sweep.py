"""`offramp sweep`: a grid of studies on a process pool and on a Dask LocalCluster gives
identical results; a killed sweep resumes and loses nothing it finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from offramp.analysis.cli import main

STUDY = {"trace": {"path": "fmnist-resnet"}, "profile": {"path": "fmnist-resnet-cpu"},
         "policy": {"name": "entropy", "tolerance_pct": 99}, "workload": {"rate_rps": 600.0},
         "run": {"requests": 300, "replications": 1}}
GRID = {"grid": {"server.max_batch": [2, 4, 8, 16, 24, 32, 48],
                 "server.max_wait_ms": [0.0, 0.5, 1.0, 2.0, 4.0],
                 "server.exit_mode": ["none", "keep", "shrink"]}}


def _files(tmp_path: Path, study=STUDY, grid=GRID) -> tuple[Path, Path]:
    s, g = tmp_path / "study.yaml", tmp_path / "grid.yaml"
    s.write_text(yaml.safe_dump(study))
    g.write_text(yaml.safe_dump(grid))
    return s, g


def test_105_points_pool_and_dask_local_agree(tmp_path):
    pytest.importorskip("distributed")
    study, grid = _files(tmp_path)
    assert main(["sweep", str(study), "--grid", str(grid), "-o", str(tmp_path / "pool"),
                 "--workers", "2", "--quiet"]) == 0
    assert main(["sweep", str(study), "--grid", str(grid), "-o", str(tmp_path / "dask"),
                 "--dask-local", "2", "--quiet"]) == 0
    pool = pd.read_parquet(tmp_path / "pool" / "sweep.parquet")
    dask = pd.read_parquet(tmp_path / "dask" / "sweep.parquet")
    assert len(pool) == 105 and len(list((tmp_path / "pool" / "points").iterdir())) == 105
    pd.testing.assert_frame_equal(pool, dask)
    # The grid's fields are columns, and each point ran with its own: batches never exceed
    # the point's max_batch, and exit mode none never exits early.
    assert (pool["batch_size_stage_0"] <= pool["server.max_batch"]).all()
    assert (pool.loc[pool["server.exit_mode"] == "none", "exit_fraction_0"] == 0).all()
    assert (pool.loc[pool["server.exit_mode"] == "shrink", "exit_fraction_0"] > 0).all()


def test_killed_sweep_resumes_and_keeps_what_it_finished(tmp_path):
    study, grid = _files(tmp_path, {**STUDY, "run": {"requests": 3000, "replications": 1}},
                         {"grid": {"server.max_batch": [4, 8, 16, 32],
                                   "server.max_wait_ms": [0.5, 1.0, 2.0],
                                   "server.exit_mode": ["keep", "shrink"]}})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "offramp.analysis.cli", "sweep", str(study), "--grid",
           str(grid), "-o", str(out), "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    points = out / "points"

    def done():  # finished points only: a point being written is a dot-named temporary file
        return [p for p in points.iterdir() if p.suffix == ".json" and not p.name.startswith(".")]

    end = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < end:
        if points.is_dir() and len(done()) >= 5:
            os.killpg(proc.pid, signal.SIGKILL)  # the parent and its pool workers
            break
        time.sleep(0.01)
    proc.wait()
    finished = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in done()}
    assert 5 <= len(finished) < 24, "the sweep was not killed part way"
    (points / ".p.json.x1y2.json").write_text('{"half')  # as a kill during a write leaves
    assert not (out / "sweep.parquet").exists()
    assert main(["sweep", str(study), "--grid", str(grid), "-o", str(out), "--workers", "1",
                 "--quiet"]) == 0
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in points.iterdir()}
    assert len(after) == 24  # the temporary files are gone
    assert all(after[name] == finished[name] for name in finished)  # skipped, untouched
    # The resumed sweep's table is the one a clean sweep gives.
    assert main(["sweep", str(study), "--grid", str(grid), "-o", str(tmp_path / "clean"),
                 "--workers", "1", "--quiet"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "sweep.parquet"),
                                  pd.read_parquet(tmp_path / "clean" / "sweep.parquet"))


def test_bad_grid_is_one_line(tmp_path, capsys):
    study, grid = _files(tmp_path, grid={"grid": {"server.max_batch": [8, 0]}})
    assert main(["sweep", str(study), "--grid", str(grid), "-o", str(tmp_path / "o"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "server.max_batch" in err[0] and "greater than or equal to 1" in err[0]
    grid.write_text(yaml.safe_dump({"grid": {"max_batch": [8]}}))
    assert main(["sweep", str(study), "--grid", str(grid), "-o", str(tmp_path / "o"),
                 "--quiet"]) == 2
    assert "section.field" in capsys.readouterr().err


def test_a_point_that_names_another_policy_runs_that_policy_alone(tmp_path):
    # The study's entropy policy has tolerance_pct; "none" takes no field: the point's policy
    # replaces the study's whole (analysis/study/overrides.py), so it neither fails nor keeps it.
    study, grid = _files(tmp_path, grid={"points": [{"policy.name": "none"},
                                                    {"policy.name": "maxprob",
                                                     "policy.tolerance_pct": 99.5},
                                                    {"server.max_batch": 16}]})
    out = tmp_path / "out"
    assert main(["sweep", str(study), "--grid", str(grid), "-o", str(out), "--workers", "1",
                 "--quiet"]) == 0
    frame = pd.read_parquet(out / "sweep.parquet")
    assert frame["exit_fraction_0"].iloc[0] == 0.0  # no exits
    assert (frame["exit_fraction_0"].iloc[1:] > 0).all()
    assert frame["policy.name"].iloc[:2].tolist() == ["none", "maxprob"]


def test_the_sweep_reports_its_progress_from_what_was_already_done(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from offramp.analysis.studies.sweep import run_sweep

    study, grid = _files(tmp_path, grid={"grid": {"server.max_batch": [4, 8, 16]}})
    seen: list[tuple[int, int]] = []
    with ThreadPoolExecutor(1) as ex:
        run_sweep(study, grid, tmp_path / "out", ex, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    (tmp_path / "out" / "points" / sorted(p.name for p in (tmp_path / "out" / "points")
                                          .iterdir())[0]).unlink()
    seen.clear()
    with ThreadPoolExecutor(1) as ex:
        run_sweep(study, grid, tmp_path / "out", ex, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 3), (3, 3)]  # two points kept, one run again


def test_a_priced_sweep_gives_each_point_its_cost_per_million(tmp_path, capsys):
    study, grid = _files(tmp_path, grid={"grid": {"server.replicas": [1, 2]}})
    assert main(["sweep", str(study), "--grid", str(grid), "-o", str(tmp_path / "out"),
                 "--workers", "1", "--quiet", "--cost-per-replica-hour", "4"]) == 0
    frame = pd.read_parquet(tmp_path / "out" / "sweep.parquet")
    want = 4 * frame["server.replicas"] / (frame["throughput_rps"] * 3600) * 1e6
    assert frame["cost_per_million"].tolist() == pytest.approx(want.tolist())
    assert "cost_per_million" in capsys.readouterr().out  # among the best points printed


def test_a_bad_point_names_the_grid_file_it_came_from(tmp_path, capsys):
    study, grid = _files(tmp_path, grid={"grid": {"policy.name": ["eenet"],
                                                  "policy.budget_ms": [0.001]}})
    assert main(["sweep", str(study), "--grid", str(grid), "-o", str(tmp_path / "out"),
                 "--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"offramp: error: {grid} at ")
    assert "field 'policy.budget_ms'" in err[0]


def test_the_sweep_page_reproduces_what_ran_with_its_sets_and_price(tmp_path):
    # The page's command is the one that ran (its --set and price), and it runs again (a
    # resume); the study section shows the study as the points started from it.
    import html
    import shlex

    from offramp.analysis.report.html import report

    study, grid = _files(tmp_path, grid={"grid": {"server.max_batch": [4, 8]}})
    out = tmp_path / "out"
    args = ["sweep", str(study), "--grid", str(grid), "-o", str(out), "--workers", "1",
            "--quiet", "--set", "run.requests=200", "--cost-per-replica-hour", "3"]
    assert main(args) == 0
    page = report(out)
    shown = html.unescape(page.split("<h2>Reproduce</h2><pre>")[1].split("</pre>")[0])
    assert "--set run.requests=200" in shown and "--cost-per-replica-hour 3" in shown
    assert "requests: 200" in page.split("<h2>Study</h2>")[1].split("</pre>")[0]
    assert main(shlex.split(shown)[1:]) == 0
