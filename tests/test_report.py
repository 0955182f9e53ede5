"""`offramp report`: one self-contained HTML page for a run folder and a sweep folder, which
opens in headless Chromium (where Chromium is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
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
    assert main(["capacity", str(study), "--slo-p99-ms", "20", "-o", str(tmp / "capacity")]) == 0
    assert main(["frontier", "--trace", "fmnist-resnet", "--profile", "fmnist-resnet-cpu",
                 "--eenet-fits", "1", "--eenet-epochs", "20", "-o", str(tmp / "frontier")]) == 0
    for name in ("run", "sweep", "capacity", "frontier"):
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
    for name in ("run", "sweep", "capacity", "frontier"):
        page = folders / name / "report.html"
        done = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                               "--dump-dom", page.as_uri()], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"offramp {name}:" in done.stdout and "</table>" in done.stdout
        assert "Uncaught" not in done.stderr
        # Rendered as the docs' screenshots are: a picture with the page's plot in it.
        shot = folders / f"report-{name}.png"
        done = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                               "--hide-scrollbars", f"--screenshot={shot}",
                               "--window-size=1100,1400", page.as_uri()], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        import matplotlib.image

        pixels = matplotlib.image.imread(shot)
        assert pixels.shape[:2] == (1400, 1100)
        # Not a blank page: a good share of the pixels differ from the white background.
        assert (pixels[..., :3].min(axis=2) < 0.9).mean() > 0.02


def _grid_frame() -> pd.DataFrame:
    """A hand-built sweep table (synthetic numbers, tests only): max_batch x max_wait_ms x
    exit_mode, p99 known per point, one point missing the SLO."""
    rows = []
    for mode in ("keep", "shrink"):
        for b in (8, 32):
            for w in (0.5, 2.0):
                p99 = (40.0 if mode == "keep" else 10.0) + b / 8 + w
                rows.append({"point": f"{mode}-{b}-{w}", "server.max_batch": b,
                             "server.max_wait_ms": w, "server.exit_mode": mode,
                             "run.requests": 1000, "throughput_rps": 900.0,
                             "latency_p50_ms": p99 / 2, "latency_p99_ms": p99, "accuracy": 0.9,
                             "slo_attainment": 0.5 if (mode, b, w) == ("shrink", 8, 0.5)
                             else 1.0})
    return pd.DataFrame(rows)


def test_sweep_view_picks_fields_best_points_and_plots_for_the_grid():
    from offramp.analysis.report.sweep_view import best_points, sweep_figures, swept

    frame = _grid_frame()
    assert swept(frame) == (["server.max_batch", "server.max_wait_ms"], ["server.exit_mode"])
    best = best_points(frame, 3)
    # The lowest p99 (shrink, 8, 0.5: 11.5 ms) misses the SLO, so it is not first.
    assert best[["server.exit_mode", "server.max_batch", "server.max_wait_ms"]].values.tolist() \
        == [["shrink", 8, 2.0], ["shrink", 32, 0.5], ["shrink", 32, 2.0]]
    assert "run.requests" not in best.columns  # not swept
    titles = [t for t, _ in sweep_figures(frame)]
    assert titles == ["p99 latency (ms) over server.max_batch × server.max_wait_ms"]
    one = frame[frame["server.max_wait_ms"] == 2.0]
    assert [t for t, _ in sweep_figures(one)] == ["latency against server.max_batch"]
    # Throughput that varies gets its own heatmap and the trade-off plot.
    varied = frame.assign(throughput_rps=frame["server.max_batch"] * 50.0)
    assert [t for t, _ in sweep_figures(varied)][1:] == [
        "throughput (req/s) over server.max_batch × server.max_wait_ms",
        "p99 latency against throughput"]
