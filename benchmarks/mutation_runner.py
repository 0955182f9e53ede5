"""The test command cosmic-ray runs for one mutant (one worker copy, cwd = the copy).

It reads which lines the mutant changed (``git diff -U0`` against the copy's commit), looks up
the tests that execute those lines in the coverage map ``.mutation/map.json`` written by
``mutation.py``, and runs just those, fastest first, stopping at the first failure. A mutant on
a line no test executes survives without running anything (reported as "not covered").
Module-level lines (run at import, not inside any test: constants, defaults, class bodies) run
every test, since any test may read them.

Exit 0: the mutant survived; non-zero: killed.

Speed: ``runner.py serve SOCKET`` is a fork server that imports the heavy third-party libraries
once (never offramp itself); each mutant's pytest runs in a fresh fork of it, which imports the
mutated offramp sources from disk. Without a server the runner starts pytest itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? ")


def changed_lines() -> dict[str, set[int]]:
    """{relative path: old-side line numbers} of the working-tree change."""
    diff = subprocess.run(["git", "diff", "-U0", "--no-color", "--no-ext-diff"], check=True,
                          capture_output=True, text=True).stdout
    out: dict[str, set[int]] = {}
    path = None
    for line in diff.splitlines():
        if line.startswith("--- a/"):
            path = line[6:]
        elif (m := HUNK.match(line)) and path:
            start, count = int(m.group(1)), int(m.group(2) or 1)
            out.setdefault(path, set()).update(range(start, start + max(count, 1)))
    return out


def selected_tests(cov: dict, changed: dict[str, set[int]]) -> list[str]:
    """Node ids of the tests that run any changed line, fastest first."""
    tests, files = cov["tests"], cov["files"]
    chosen: set[int] = set()
    for path, lines in changed.items():
        info = files.get(path)
        if info is None:
            continue
        for ln in lines:
            if str(ln) in info["lines"]:
                chosen.update(info["lines"][str(ln)])
            elif str(ln) in info["import_lines"]:
                # Run at import (constants, defaults, class bodies): any test may read it.
                chosen.update(range(len(tests)))
    return [tests[i][0] for i in sorted(chosen, key=lambda i: (tests[i][1], i))]


def main() -> int:
    cov = json.loads(Path(".mutation/map.json").read_text())
    changed = changed_lines()
    if not changed:
        print("no change on disk: nothing to test")
        return 0
    ids = selected_tests(cov, changed)
    if not ids:
        print(f"not covered: no test runs {sorted((p, sorted(v)) for p, v in changed.items())}")
        return 0
    # No example database carried from one mutant to the next: each mutant meets the suite fresh.
    shutil.rmtree(".hypothesis", ignore_errors=True)
    args = ["-x", "-q", "-p", "no:cacheprovider", "--no-header", *ids]
    sock = Path(".mutation/fork.sock")
    if sock.exists():
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall((json.dumps({"args": args, "timeout_s": TIMEOUT_S}) + "\n").encode())
            code = int(s.makefile().readline() or 3)
        if code == 124:
            print("timeout (fork server)")
        return code
    return subprocess.run([sys.executable, "-m", "pytest", *args]).returncode


TIMEOUT_S = 170.0
PRELOAD = ["numpy", "scipy.stats", "scipy.optimize", "pandas", "pyarrow", "pyarrow.parquet",
           "cvxpy", "simpy", "pydantic", "yaml", "rich", "matplotlib.pyplot", "hypothesis",
           "pytest", "torch", "sklearn", "highspy"]


def serve(path: str) -> None:
    """Fork server: one pytest run per request, each in a fresh child of this process."""
    import importlib

    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    assert not any(m == "offramp" or m.startswith("offramp.") for m in sys.modules)
    sys.dont_write_bytecode = True
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        with conn:
            req = json.loads(conn.makefile().readline())
            pid = os.fork()
            if pid == 0:
                srv.close()
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                import pytest

                code = 3
                try:
                    code = int(pytest.main(req["args"]))
                finally:
                    os._exit(code)
            end = time.time() + float(req["timeout_s"])
            code = None
            while code is None:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    code = os.waitstatus_to_exitcode(status)
                elif time.time() > end:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    code = 124
                else:
                    time.sleep(0.02)
            conn.sendall(f"{code}\n".encode())


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2])
    sys.exit(main())
