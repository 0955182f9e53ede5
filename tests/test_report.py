"""`offramp report`: one self-contained HTML page for a run folder and a sweep folder, which
opens in headless Chromium (where Chromium is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from offramp.analysis.cli import main

STUDY = {"trace": {"path": "fmnist-resnet"}, "profile": {"path": "fmnist-resnet-cpu"},
         "policy": {"name": "entropy", "tolerance_pct": 99}, "workload": {"rate_rps": 600.0},
         "run": {"requests": 1000, "replications": 2}}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)  # nothing fetched
    assert page.count("data:image/png;base64,") >= 1


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    study, grid = tmp / "study.yaml", tmp / "grid.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    grid.write_text(yaml.safe_dump({"grid": {"server.max_batch": [8, 32],
                                             "server.exit_mode": ["keep", "shrink"]}}))
    assert main(["simulate", str(study), "-o", str(tmp / "run")]) == 0
    assert main(["sweep", str(study), "--grid", str(grid), "-o", str(tmp / "sweep"),
                 "--workers", "1", "--quiet"]) == 0
    for name in ("run", "sweep"):
        assert main(["report", str(tmp / name)]) == 0
    return tmp


def test_run_and_sweep_pages(folders):
    run = (folders / "run" / "report.html").read_text()
    _self_contained(run)
    for words in ("latency p99", "exits at 0", "entropy", "offramp simulate", "numpy"):
        assert words in run
    sweep = (folders / "sweep" / "report.html").read_text()
    _self_contained(sweep)
    assert "server.max_batch" in sweep and "offramp sweep" in sweep
    assert sweep.count("<tr>") >= 4 + 1  # the four points, and the software table
    # A run folder with its report in it can be simulated into again.
    again = folders / "again"
    shutil.copytree(folders / "run", again)
    assert main(["simulate", str(folders / "study.yaml"), "-o", str(again)]) == 0


def test_report_refuses_other_folders(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a run (summary.json)" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_pages_open_in_headless_chromium(folders):
    for name in ("run", "sweep"):
        page = folders / name / "report.html"
        done = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                               "--dump-dom", page.as_uri()], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"offramp {name}:" in done.stdout and "</table>" in done.stdout
        assert "Uncaught" not in done.stderr
