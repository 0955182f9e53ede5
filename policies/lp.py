"""Solving the policies' linear programs (cvxpy with HiGHS), one home for how: HiGHS prints a
licence banner to the process's standard output the first time a solver is made, which would
land in ``--json`` output and piped tables; it is made once with standard output sent to
/dev/null."""

from __future__ import annotations

import os
import sys
from typing import Any

_QUIET = False


def _silence_banner() -> None:
    """Make HiGHS's first solver (the one that prints the banner) with fd 1 on /dev/null."""
    global _QUIET
    if _QUIET:
        return
    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
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
