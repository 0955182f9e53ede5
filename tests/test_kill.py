"""``kill -9`` during ``simulate`` and ``frontier``: the output folder holds the previous complete
output (or nothing), never a partial one, and the next run works and cleans up. Synthetic trace
and profile (tests only); the commands run as a user runs them, in their own process."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

DATA = Path(__file__).parent / "data"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "offramp.analysis.cli", *args]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _kill_when(cmd: list[str], cwd: Path, ready, timeout_s: float = 120.0) -> bool:
    """Start ``cmd``; SIGKILL it as soon as ``ready()`` holds (polled every millisecond).
    Returns whether it was killed (False: it finished first)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    end = time.monotonic() + timeout_s
    try:
        while proc.poll() is None and time.monotonic() < end:
            if ready():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.001)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _siblings(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}."))


def _check_after_kill(dest: Path, before: dict[str, str] | None) -> None:
    """What a killed run may leave: exactly the previous output, or (with a half-done swap) the
    previous output moved aside, which the next run puts back; never a partial folder."""
    if dest.exists():
        assert _digest(dest) == before
    else:
        aside = [n for n in _siblings(dest) if ".old-" in n]
        assert before is None or len(aside) == 1


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    shutil.copy(DATA / "synthetic-trace.npz", tmp_path / "trace.npz")
    shutil.copy(DATA / "synthetic-profile.json", tmp_path / "profile.json")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "trace": {"path": "trace.npz"}, "profile": {"path": "profile.json"},
        "policy": {"name": "entropy", "tolerance_pct": 99},
        "run": {"requests": 150_000, "replications": 2}}))
    return path


def test_kill_9_simulate_keeps_previous_output(study: Path, tmp_path: Path):
    dest = tmp_path / "run"
    small = ["--set", "run.requests=2000"]
    assert subprocess.run(_cli("simulate", str(study), "-o", str(dest), *small), cwd=tmp_path,
                          env=ENV, capture_output=True).returncode == 0
    before = _digest(dest)
    # Killed while computing, then while writing its temporary folder.
    assert _kill_when(_cli("simulate", str(study), "-o", str(dest)), tmp_path,
                      lambda: time.sleep(1.0) or True)
    _check_after_kill(dest, before)
    killed = _kill_when(_cli("simulate", str(study), "-o", str(dest)), tmp_path,
                        lambda: any(".tmp-" in n for n in _siblings(dest)))
    _check_after_kill(dest, before)
    assert killed, "the run finished before its temporary folder was seen"
    # The next run recovers, replaces the folder whole and leaves nothing beside it.
    done = subprocess.run(_cli("simulate", str(study), "-o", str(dest), *small), cwd=tmp_path,
                          env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _digest(dest) == before  # same config and seed: the same bytes
    assert _siblings(dest) == []


def test_kill_9_frontier_leaves_nothing_partial(tmp_path: Path):
    shutil.copy(DATA / "synthetic-trace.npz", tmp_path / "trace.npz")
    shutil.copy(DATA / "synthetic-profile.json", tmp_path / "profile.json")
    dest = tmp_path / "frontier"
    cmd = _cli("frontier", "--trace", "trace.npz", "--profile", "profile.json",
               "--eenet-fits", "1", "--eenet-epochs", "400", "-o", str(dest))
    assert _kill_when(cmd, tmp_path, lambda: time.sleep(2.0) or True)
    _check_after_kill(dest, None)
    assert not dest.exists()
    quick = [*cmd[:-4], "--eenet-epochs", "5", "-o", str(dest)]
    done = subprocess.run(quick, cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted(f"trace-frontier{s}" for s in
                           (".csv", "-oracle.csv", "-budgets.csv", ".png"))
    assert _siblings(dest) == []
