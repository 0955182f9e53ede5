"""The built wheel installs and runs outside the source tree: every package is found (not
listed by hand), shipped data comes with it, and the CLI works from a fresh venv.

The fresh venv gets offramp only from the wheel; its dependencies come from this venv's
site-packages through a path file (which does not run this venv's editable-install hook).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("common", "core", "traces", "profiling", "policies", "sim", "analysis")


def _run(args, cwd, **kw):
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, **kw)
    assert done.returncode == 0, f"{args}: {done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    return done


def _source_copy(dest: Path) -> Path:
    """What a clean checkout holds for the build (so the build leaves nothing in the repo)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for layer in (*LAYERS, "api"):
        shutil.copytree(REPO / layer, dest / layer, ignore=ignore)
    return dest


def test_wheel_installs_in_a_fresh_venv_and_runs(tmp_path):
    dist, src = tmp_path / "dist", tmp_path / "src"
    src.mkdir()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", dist, _source_copy(src)], cwd=tmp_path)
    (wheel,) = dist.glob("offramp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # Every package folder of every layer is in the wheel (subpackages too).
    for layer in LAYERS:
        for init in (REPO / layer).rglob("__init__.py"):
            rel = init.relative_to(REPO).as_posix()
            assert f"offramp/{rel}" in names, f"{rel} is not in the wheel"
    assert any(n.startswith("offramp/traces/data/") and n.endswith(".npz") for n in names)
    assert {"offramp/__init__.py", "offramp/twins.py"} <= set(names)  # the Python API

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q",
          wheel], cwd=tmp_path)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONPATH": ""}
    where = _run([py, "-c", "import offramp.sim, offramp.core, offramp.profiling.serving_loop, "
                  "offramp.profiling.backends.eager; print(offramp.sim.__file__)"],
                 cwd=tmp_path, env=env).stdout
    assert str(site) in where  # the wheel's copy, not the source tree
    api = _run([py, "-c", "import offramp; print(offramp.__version__); "
                "print(offramp.load_trace('fmnist-resnet').model_id)"], cwd=tmp_path, env=env)
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert api.stdout.split() == [version, "fmnist-resnet"]
    offramp = venv / "bin" / "offramp"
    assert "demo" in _run([offramp, "demo", "--help"], cwd=tmp_path, env=env).stdout
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "trace": {"path": "fmnist-resnet"}, "profile": {"path": "fmnist-resnet-cpu"},
        "policy": {"name": "entropy", "tolerance_pct": 99}, "workload": {"rate_rps": 800.0},
        "run": {"requests": 2000, "replications": 2}}))
    _run([offramp, "simulate", study, "-o", tmp_path / "run"], cwd=tmp_path, env=env)
    assert (tmp_path / "run" / "requests.parquet").exists()
