"""Mutation testing of offramp's core modules with cosmic-ray (not part of CI).

    bash benchmarks/mutation.sh [--rev HEAD] [--workers 2] [--label after] [--sample 0.3]

What it does, in throw-away copies of the repository (the checkout itself is never mutated):
1. clones ``--rev`` (default HEAD; ``--rev WORKTREE`` takes the working tree as it is) into one
   copy per worker, each importing its own sources (``PYTHONPATH`` shadows the editable
   install);
2. runs the test suite once under coverage with per-test contexts, to learn which tests execute
   each line, and how long each test takes;
3. has cosmic-ray mutate the core modules (CORE below) with a reduced operator set (OPERATORS:
   boundary and negated comparisons, +/-, *//, &/|, numbers ±1, and/or, True/False, not,
   unary minus, break/continue, loops that never run) and, for each mutant, runs only the tests
   that execute the mutated line (``mutation_runner.py``), fastest first, stopping at the first
   failure;
4. writes ``benchmarks/results/mutation-LABEL.json`` (every mutant and its outcome) and prints
   the score per group, and every survivor with its source line.

Known-equivalent mutants (no test can kill them: the program behaves the same) are listed, with
the reason, in ``benchmarks/mutation_equivalent.toml``; the score excludes them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["common", "core", "traces", "profiling", "policies", "sim", "analysis"]

# Group -> modules mutated. "summaries" are the run metrics; the validators are the input checks.
CORE = {
    "sim": ["sim/fast.py", "sim/reference.py", "sim/service.py", "sim/workload.py", "sim/replay.py",
            "sim/runner.py", "sim/records.py", "sim/scenario.py", "core/execution.py",
            "core/batching.py", "core/modes.py"],
    "summaries": ["sim/metrics.py"],
    "policies": ["policies/base.py", "policies/baselines.py", "policies/confidence.py",
                 "policies/thresholds.py", "policies/costs.py", "policies/pame.py",
                 "policies/patience.py", "policies/table.py", "policies/oracle_lp.py",
                 "policies/mixing.py", "policies/eenet.py", "policies/gati.py",
                 "policies/dynamic_ofa.py", "policies/registry.py"],
    "latency": ["profiling/latency.py"],
    "validators": ["traces/format.py", "profiling/format.py", "sim/config.py",
                   "analysis/study/config.py", "core/plan.py"],
    # Added 2026-12-06 (not yet run: docs/testing.md): the judge and the validation pipeline's
    # pure parts, the capacity search, sweeps and overrides, the served-cost fit.
    "validation": ["analysis/validation/judge.py", "analysis/validation/served.py",
                   "analysis/validation/sim.py", "profiling/served.py"],
    "studies": ["analysis/studies/capacity.py", "analysis/studies/sweep.py", "analysis/study/overrides.py"],
}
# Tests that train, record or profile real models: slow, and they guard no core module.
SKIP_TESTS = ["test_models.py", "test_datasets.py", "test_record.py", "test_measure.py",
              "test_segments.py", "test_tensorrt.py", "test_cmd_profile.py", "test_cmd_traces.py",
              "test_cli_bare.py"]
# cosmic-ray operators left out (regexes); see the module docstring for what is kept.
KEEP_COMPARE = ["Lt_LtE", "Lt_GtE", "LtE_Lt", "LtE_Gt", "Gt_GtE", "Gt_LtE", "GtE_Gt", "GtE_Lt",
                "Eq_NotEq", "NotEq_Eq", "Is_IsNot", "IsNot_Is", "In_NotIn", "NotIn_In"]
KEEP_BINARY = ["Add_Sub", "Sub_Add", "Mul_Div", "Div_Mul", "FloorDiv_Div", "Pow_Mul",
               "BitAnd_BitOr", "BitOr_BitAnd"]
EXCLUDE_OPERATORS = [
    "core/ReplaceComparisonOperator_(?!(" + "|".join(KEEP_COMPARE) + ")$)",
    "core/ReplaceBinaryOperator_(?!(" + "|".join(KEEP_BINARY) + ")$)",
    "core/ReplaceUnaryOperator_(?!(USub_UAdd|Delete_USub|Delete_Not|Delete_Invert)$)",
    "core/VariableInserter", "core/VariableReplacer", "core/RemoveDecorator",
    "core/ExceptionReplacer",
]
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


def sampled(module: str, operator: str, occurrence: int, fraction: float) -> bool:
    """A fixed pseudo-random subset: the same mutants at every run over the same sources."""
    digest = hashlib.sha256(f"{module}|{operator}|{occurrence}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def take_sample(db: Path, fraction: float, only: set | None = None) -> None:
    """Mark the mutants outside the sample (or outside ``only``: (module, operator,
    occurrence) keys) as skipped (cosmic-ray then leaves them alone)."""
    from cosmic_ray.work_db import WorkDB
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    work = WorkDB(str(db), WorkDB.Mode.open)
    try:
        def wanted(m) -> bool:
            if only is not None:
                return (m.module_path.as_posix(), m.operator_name, m.occurrence) in only
            return sampled(m.module_path.as_posix(), m.operator_name, m.occurrence, fraction)

        out = [item.job_id for item in work.pending_work_items
               if not all(wanted(m) for m in item.mutations)]
        work.set_multiple_results(out, WorkResult(output="not sampled",
                                                  worker_outcome=WorkerOutcome.SKIPPED))
    finally:
        work.close()


def merge_recheck(old: dict, new: dict) -> dict:
    """The earlier results with the rechecked survivors' new outcomes (same sources)."""
    key = lambda m: (m["module"], m["operator"], m["occurrence"])  # noqa: E731
    again = {key(m): m for m in new["mutants"]}
    mutants = [again.get(key(m), m) for m in old["mutants"]]
    res = score(mutants, new["label"], f"{old['rev']} rechecked at {new['rev']}",
                old["seconds"] + new["seconds"], load_equivalent())
    res.update(sample=old.get("sample", 1.0), recheck_seconds=new["seconds"],
               rechecked=len(again))
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    end = time.time() + seconds
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"mutation: worker on port {port} exited ({proc.returncode})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    sys.exit(f"mutation: worker on port {port} did not start")


def progress(db: Path, stop: subprocess.Popen) -> None:
    """A progress bar over the session's finished work items while cosmic-ray runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    def counts() -> tuple[int, int]:
        with sqlite3.connect(db) as con:
            total = con.execute("SELECT COUNT(*) FROM work_items").fetchone()[0]
            done = con.execute("SELECT COUNT(*) FROM work_results").fetchone()[0]
        return total, done

    total, done = counts()
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn()) as bar:
        task = bar.add_task("mutants", total=total, completed=done)
        while stop.poll() is None:
            time.sleep(2)
            bar.update(task, completed=counts()[1])
        bar.update(task, completed=counts()[1])


def load_equivalent() -> dict[str, str]:
    path = REPO / "benchmarks" / "mutation_equivalent.toml"
    if not path.exists():
        return {}
    return {e["id"]: e["why"] for e in tomllib.loads(path.read_text()).get("mutant", [])}


ANNOTATION = re.compile(r"^\s*(def \w+\(|\w+\s*:\s*[^=]*\|)|->\s*[^:]*\|")


def equivalent_reason(m: dict, listed: dict[str, str]) -> str | None:
    """Why a surviving mutant is equivalent: listed by hand, or by rule; None if it is not."""
    if m["outcome"] != "survived":
        return None
    if m["id"] in listed:
        return listed[m["id"]]
    if m["operator"] == "ReplaceBinaryOperator_BitOr_BitAnd" and ANNOTATION.search(m["source"]):
        return ("type annotation (`X | None`): never evaluated, every module has "
                "`from __future__ import annotations`")
    return None


def mutant_id(module: str, line: int, operator: str, text: str) -> str:
    """A key that survives unrelated edits elsewhere: module, operator and the line's text."""
    return f"{module}|{operator.removeprefix('core/')}|{text.strip()}"


def report(copy: Path, db: Path, label: str, rev: str, seconds: float) -> dict:
    dump = subprocess.run(["cosmic-ray", "dump", str(db)], cwd=copy, check=True,
                          capture_output=True, text=True).stdout
    group_of = {m: g for g, mods in CORE.items() for m in mods}
    equivalent = load_equivalent()
    mutants = []
    for row in dump.splitlines():
        item, result = json.loads(row)
        if result is None or result.get("worker_outcome") == "skipped":
            continue
        mut = item["mutations"][0]
        module, line = mut["module_path"], mut["start_pos"][0]
        text = (copy / module).read_text().splitlines()[line - 1]
        outcome = result.get("test_outcome") or result.get("worker_outcome")
        output = result.get("output") or ""
        key = mutant_id(module, line, mut["operator_name"], text)
        mutants.append({"group": group_of[module], "module": module, "line": line,
                        "operator": mut["operator_name"].removeprefix("core/"),
                        "occurrence": mut["occurrence"], "source": text.strip(),
                        "outcome": outcome,
                        "not_covered": outcome == "survived" and output.startswith("not covered"),
                        "timeout": output.startswith("timeout"),
                        "id": key})
    return score(mutants, label, rev, seconds, equivalent)


def score(mutants: list[dict], label: str, rev: str, seconds: float,
          equivalent: dict[str, str]) -> dict:
    """Per-group score; survivors known to be equivalent are left out."""
    for m in mutants:
        m["equivalent"] = equivalent_reason(m, equivalent)
    groups = {}
    for g in CORE:
        ms = [m for m in mutants if m["group"] == g and m["outcome"] in ("killed", "survived")]
        eq = sum(1 for m in ms if m["equivalent"])
        killed = sum(1 for m in ms if m["outcome"] == "killed")
        denom = len(ms) - eq
        groups[g] = {"mutants": len(ms), "killed": killed, "equivalent": eq,
                     "survived": denom - killed,
                     "not_covered": sum(1 for m in ms if m["not_covered"]),
                     "score": round(killed / denom, 4) if denom else None}
    return {"label": label, "rev": rev, "seconds": round(seconds), "operators_excluded":
            EXCLUDE_OPERATORS, "groups": groups, "mutants": mutants}


def print_report(res: dict) -> None:
    print(f"\nmutation score ({res['label']}, rev {res['rev']}, {res['seconds']} s)")
    print(f"{'group':<11} {'mutants':>7} {'killed':>7} {'equiv.':>7} {'survived':>8} "
          f"{'uncov.':>7} {'score':>7}")
    for g, s in res["groups"].items():
        score = "-" if s["score"] is None else f"{100 * s['score']:.1f}%"
        print(f"{g:<11} {s['mutants']:>7} {s['killed']:>7} {s['equivalent']:>7} "
              f"{s['survived']:>8} {s['not_covered']:>7} {score:>7}")
    surv = [m for m in res["mutants"] if m["outcome"] == "survived" and not m["equivalent"]]
    if surv:
        print(f"\n{len(surv)} surviving mutants (not known equivalent):")
        for m in sorted(surv, key=lambda m: (m["module"], m["line"])):
            tag = " [not covered]" if m["not_covered"] else ""
            print(f"  {m['module']}:{m['line']} {m['operator']}{tag}: {m['source']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", default="HEAD", help="commit to mutate, or WORKTREE")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--label", default="current")
    ap.add_argument("--timeout-s", type=float, default=180.0, help="per mutant (timeout = killed)")
    ap.add_argument("--groups", nargs="*", default=list(CORE), choices=list(CORE))
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--rescore", type=Path, metavar="RESULTS.json",
                    help="only re-apply the equivalent-mutant list to saved results and print")
    ap.add_argument("--recheck", type=Path, metavar="RESULTS.json",
                    help="mutate only the survivors (not known equivalent) of an earlier run")
    ap.add_argument("--sample", type=float, default=0.3,
                    help="mutate only this fixed pseudo-random fraction of the mutants (default "
                    "0.3: about 25 minutes on 2 cores; 1 for every mutant, over an hour)")
    args = ap.parse_args(argv)
    if args.rescore:
        old = json.loads(args.rescore.read_text())
        res = score(old["mutants"], old["label"], old["rev"], old["seconds"], load_equivalent())
        res["sample"] = old.get("sample", 1.0)
        tmp = args.rescore.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1) + "\n")
        tmp.replace(args.rescore)
        print_report(res)
        return 0
    rev = args.rev
    if rev != "WORKTREE":
        rev = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="offramp-mutation-"))
    t0 = time.time()
    procs: list[subprocess.Popen] = []
    try:
        copies = [work / f"w{i}" for i in range(args.workers)]
        for c in copies:
            c.mkdir()
            make_copy(c, rev)
        cov = coverage_map(copies[0])
        for c in copies:
            (c / ".mutation" / "map.json").write_text(json.dumps(cov))
            # No cached bytecode: every mutant is compiled from its source.
            for cache in c.rglob("__pycache__"):
                shutil.rmtree(cache, ignore_errors=True)
            sock = c / ".mutation" / "fork.sock"
            procs.append(subprocess.Popen([sys.executable, str(c / ".mutation" / "runner.py"),
                                           "serve", str(sock)], cwd=c, env=copy_env(c)))
            end = time.time() + 120
            while not sock.exists() and time.time() < end and procs[-1].poll() is None:
                time.sleep(0.2)
            if not sock.exists():
                sys.exit(f"mutation: the fork server in {c} did not start")
        ports = [free_port() for _ in copies]
        modules = [m for g in args.groups for m in CORE[g]]
        cfg = work / "cosmic-ray.toml"
        cfg.write_text("\n".join([
            "[cosmic-ray]",
            f"module-path = {json.dumps(modules)}",
            f"timeout = {args.timeout_s}",
            "excluded-modules = []",
            f'test-command = "{sys.executable} .mutation/runner.py"',
            "[cosmic-ray.distributor]",
            'name = "http"',
            "[cosmic-ray.distributor.http]",
            f"worker-urls = {json.dumps([f'http://127.0.0.1:{p}' for p in ports])}",
            "[cosmic-ray.filters.operators-filter]",
            f"exclude-operators = {json.dumps(EXCLUDE_OPERATORS)}",
        ]) + "\n")
        db = work / "session.sqlite"
        sh(["cosmic-ray", "init", str(cfg), str(db)], copies[0])
        sh(["cr-filter-operators", str(db), str(cfg)], copies[0])
        if args.recheck:
            old = json.loads(args.recheck.read_text())
            keep = {(m["module"], "core/" + m["operator"], m["occurrence"]) for m in old["mutants"]
                    if m["outcome"] == "survived" and not m.get("equivalent")}
            take_sample(db, 1.0, keep)
        elif args.sample < 1:
            take_sample(db, args.sample)
        workers = []
        for c, p in zip(copies, ports, strict=True):
            workers.append(subprocess.Popen(["cosmic-ray", "http-worker", "--port", str(p)], cwd=c,
                                          env=copy_env(c), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        procs += workers
        for p, proc in zip(ports, workers, strict=True):
            wait_port(p, proc)
        exe = subprocess.Popen(["cosmic-ray", "exec", str(cfg), str(db)], cwd=copies[0])
        progress(db, exe)
        if exe.wait():
            sys.exit("mutation: cosmic-ray exec failed")
        res = report(copies[0], db, args.label, rev, time.time() - t0)
        res["sample"] = args.sample
        if args.recheck:
            res = merge_recheck(json.loads(args.recheck.read_text()), res)
    finally:
        for proc in procs:
            proc.terminate()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = REPO / "benchmarks" / "results" / f"mutation-{args.label}.json"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    tmp.replace(out)
    print_report(res)
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
