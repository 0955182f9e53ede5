"""Solving the policies' linear programs (cvxpy with HiGHS), one home for how: HiGHS prints a
licence banner to the process's standard output the first time a solver is made, which would
land in ``--json`` output and piped tables; it is made once with standard output sent to
/dev/null."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

_QUIET = False
_LOCK = threading.Lock()  # a worker's threads: one redirects fd 1, the others wait


def _silence_banner() -> None:
    """Make HiGHS's first solver (the one that prints the banner, at construction: checked on
    highspy 1.16) with fd 1 on /dev/null; where fd 1 cannot be redirected, leave it."""
    global _QUIET
    with _LOCK:
        if _QUIET:
            return
        import highspy

        sys.stdout.flush()
        try:
            saved = os.dup(1)
        except OSError:  # no standard output to keep clean
            _QUIET = True
            return
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 1)
                highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        _QUIET = True


def solve(problem: Any, what: str) -> None:
    """Solve the cvxpy ``problem`` with HiGHS; a RuntimeError naming ``what`` unless optimal."""
    import cvxpy as cp

    _silence_banner()
    problem.solve(solver=cp.HIGHS)
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise RuntimeError(f"{what} ended with status {problem.status}")
