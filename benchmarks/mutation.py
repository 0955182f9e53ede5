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
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mutation_copies import SKIP_TESTS, copy_env, coverage_map, make_copy, sh  # noqa: F401
from mutation_score import (  # benchmarks/ is on the path when this runs as a script
    CORE,
    EXCLUDE_OPERATORS,
    load_equivalent,
    merge_recheck,
    print_report,
    report,
    score,
)

REPO = Path(__file__).resolve().parent.parent


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


def _args(argv: list[str] | None) -> argparse.Namespace:
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
    return ap.parse_args(argv)


def _write(path: Path, res: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    tmp.replace(path)


def _fork_servers(copies: list[Path], cov: dict) -> list[subprocess.Popen]:
    """In each copy: the coverage map, no cached bytecode, and the runner's fork server."""
    procs = []
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
    return procs


def _cosmic_config(path: Path, modules: list[str], timeout_s: float, ports: list[int]) -> None:
    path.write_text("\n".join([
        "[cosmic-ray]",
        f"module-path = {json.dumps(modules)}",
        f"timeout = {timeout_s}",
        "excluded-modules = []",
        f'test-command = "{sys.executable} .mutation/runner.py"',
        "[cosmic-ray.distributor]",
        'name = "http"',
        "[cosmic-ray.distributor.http]",
        f"worker-urls = {json.dumps([f'http://127.0.0.1:{p}' for p in ports])}",
        "[cosmic-ray.filters.operators-filter]",
        f"exclude-operators = {json.dumps(EXCLUDE_OPERATORS)}",
    ]) + "\n")


def _mutate(args: argparse.Namespace, rev: str, work: Path, procs: list) -> dict:
    """Copies, coverage, the cosmic-ray session (sampled or a recheck) on HTTP workers."""
    t0 = time.time()
    copies = [work / f"w{i}" for i in range(args.workers)]
    for c in copies:
        c.mkdir()
        make_copy(c, rev)
    procs += _fork_servers(copies, coverage_map(copies[0]))
    ports = [free_port() for _ in copies]
    cfg, db = work / "cosmic-ray.toml", work / "session.sqlite"
    _cosmic_config(cfg, [m for g in args.groups for m in CORE[g]], args.timeout_s, ports)
    sh(["cosmic-ray", "init", str(cfg), str(db)], copies[0])
    sh(["cr-filter-operators", str(db), str(cfg)], copies[0])
    if args.recheck:
        old = json.loads(args.recheck.read_text())
        keep = {(m["module"], "core/" + m["operator"], m["occurrence"]) for m in old["mutants"]
                if m["outcome"] == "survived" and not m.get("equivalent")}
        take_sample(db, 1.0, keep)
    elif args.sample < 1:
        take_sample(db, args.sample)
    workers = [subprocess.Popen(["cosmic-ray", "http-worker", "--port", str(p)], cwd=c,
                                env=copy_env(c), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
               for c, p in zip(copies, ports, strict=True)]
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
    return res


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.rescore:
        old = json.loads(args.rescore.read_text())
        res = score(old["mutants"], old["label"], old["rev"], old["seconds"], load_equivalent())
        res["sample"] = old.get("sample", 1.0)
        _write(args.rescore, res)
        print_report(res)
        return 0
    rev = args.rev
    if rev != "WORKTREE":
        rev = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="offramp-mutation-"))
    procs: list[subprocess.Popen] = []
    try:
        res = _mutate(args, rev, work, procs)
    finally:
        for proc in procs:
            proc.terminate()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = REPO / "benchmarks" / "results" / f"mutation-{args.label}.json"
    out.parent.mkdir(exist_ok=True)
    _write(out, res)
    print_report(res)
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
