"""One process pool per process for independent CPU-bound work (EENet's seeds, ...).

Created on first use with the ``spawn`` start method (torch and forked OpenMP threads do not
mix), reused by every later caller, shut down at exit. Work handed to it must give the same
result in a worker as in the caller (single-threaded, seeded): the pool only changes where it
runs. ``OFFRAMP_WORKERS`` caps its size (1: everything runs in the calling process).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

_POOL: ProcessPoolExecutor | None = None


def workers() -> int:
    """Processes the pool may use: the cores this process may run on, capped by
    OFFRAMP_WORKERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cap = os.environ.get("OFFRAMP_WORKERS")
    return max(1, min(cores or 1, int(cap) if cap and cap.isdigit() else cores or 1))


def _pool() -> Executor:
    global _POOL
    if _POOL is None:
        _POOL = ProcessPoolExecutor(max_workers=workers(), mp_context=get_context("spawn"))
        atexit.register(_POOL.shutdown, cancel_futures=True)
    return _POOL


def map_independent(fn: Callable[..., Any], calls: Iterable[tuple]) -> list[Any]:
    """``[fn(*args) for args in calls]``, in order; spread over the pool where there is more
    than one call and more than one worker (``fn`` must be importable: a module-level
    function)."""
    calls = list(calls)
    if len(calls) < 2 or workers() < 2:
        return [fn(*args) for args in calls]
    return list(_pool().map(fn, *zip(*calls, strict=True)))
