"""Throw-away copies of the repository for a mutation run (benchmarks/mutation.py) and the
coverage map of which tests execute each line (also used by benchmarks/planted_bugs.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mutation_score import CORE

REPO = Path(__file__).resolve().parent.parent


PACKAGES = ["common", "core", "traces", "profiling", "policies", "sim", "analysis"]


# Tests that train, record or profile real models: slow, and they guard no core module.
SKIP_TESTS = ["test_models.py", "test_datasets.py", "test_record.py", "test_measure.py",
              "test_segments.py", "test_tensorrt.py", "test_cmd_profile.py", "test_cmd_traces.py",
              "test_cli_bare.py"]


TIMING_PLUGIN = '''
import json, os
_T = {}
def pytest_runtest_logreport(report):
    _T[report.nodeid] = _T.get(report.nodeid, 0.0) + report.duration
def pytest_sessionfinish(session):
    with open(os.environ["MUTATION_TIMES"], "w") as f:
        json.dump(_T, f)
'''


def sh(cmd: list[str], cwd: Path, env: dict | None = None, quiet: bool = True) -> None:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=quiet, text=True)
    if out.returncode:
        sys.exit(f"mutation: `{' '.join(cmd)}` failed in {cwd}:\n{out.stdout}\n{out.stderr}")


def make_copy(dest: Path, rev: str) -> None:
    """A git checkout of ``rev`` (or the working tree) whose tests import its own sources."""
    if rev == "WORKTREE":
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                               check=True, capture_output=True).stdout.decode().split("\0")
        for f in filter(None, files):
            if (REPO / f).is_file():
                (dest / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / f, dest / f)
        sh(["git", "init", "-q"], dest)
        sh(["git", "add", "-A"], dest)
        sh(["git", "-c", "user.name=m", "-c", "user.email=m@localhost", "commit", "-qm", "wt"],
           dest)
    else:
        sh(["git", "clone", "-q", "--no-checkout", str(REPO), str(dest)], REPO)
        sh(["git", "checkout", "-q", rev], dest)
    py = dest / ".mutation" / "py" / "offramp"
    py.mkdir(parents=True)
    for pkg in PACKAGES:
        (py / pkg).symlink_to(dest / pkg, target_is_directory=True)
    for module in sorted((dest / "api").glob("*.py")):  # api/ is the package offramp itself
        (py / module.name).symlink_to(module)
    (dest / ".mutation" / "mutation_timing.py").write_text(TIMING_PLUGIN)
    shutil.copy2(REPO / "benchmarks" / "mutation_runner.py", dest / ".mutation" / "runner.py")
    with open(dest / ".git" / "info" / "exclude", "a") as f:
        f.write("\n.mutation/\n.hypothesis/\n.coverage*\n__pycache__/\n")


def copy_env(copy: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{copy / '.mutation' / 'py'}:{copy / '.mutation'}",
               HYPOTHESIS_PROFILE="ci", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg")
    return env


def coverage_map(copy: Path) -> dict:
    """Which tests execute each line of the core modules, and how long each test takes."""
    env = copy_env(copy)
    env["MUTATION_TIMES"] = str(copy / ".mutation" / "times.json")
    ignore = [f"--ignore=tests/{t}" for t in SKIP_TESTS]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "mutation_timing",
           "--cov", str(copy), "--cov-context=test", "--cov-report=", *ignore, "tests"]
    print("mutation: coverage run of the suite (per-test contexts) ...", flush=True)
    run = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True)
    if run.returncode:
        sys.exit(f"mutation: the suite fails on the unmutated copy:\n{run.stdout[-4000:]}")
    import coverage

    times = json.loads((copy / ".mutation" / "times.json").read_text())
    data = coverage.CoverageData(basename=str(copy / ".coverage"))
    data.read()
    index: dict[str, int] = {}
    tests: list[list] = []

    def test_id(ctx: str) -> int:
        node = ctx.rsplit("|", 1)[0]
        if node not in index:
            index[node] = len(tests)
            tests.append([node, round(times.get(node, 0.0), 4)])
        return index[node]

    modules = {m for group in CORE.values() for m in group}
    files = {}
    for measured in data.measured_files():
        real = Path(measured).resolve()
        try:
            rel = real.relative_to(copy.resolve()).as_posix()
        except ValueError:
            continue
        if rel not in modules:
            continue
        lines, import_lines, touching = {}, [], set()
        for ln, ctxs in data.contexts_by_lineno(measured).items():
            ids = set()
            for ctx in ctxs:
                if not ctx:
                    import_lines.append(ln)
                    continue
                tid = test_id(ctx)
                ids.add(tid)
                if ctx.endswith("|setup"):
                    # A fixture: every test of that test module may depend on it.
                    mod = ctx.split("::", 1)[0]
                    ids.update(test_id(n) for n in times if n.startswith(mod + "::"))
            if ids:
                lines[str(ln)] = sorted(ids)
                touching |= ids
        files[rel] = {"lines": lines, "import_lines": [str(x) for x in sorted(set(import_lines))],
                      "touching": sorted(touching)}
    return {"tests": tests, "files": files, "hypothesis_profile": "ci"}
