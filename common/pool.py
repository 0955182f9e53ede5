"""One process pool for independent CPU-bound work (EENet's seeds, ...), where it is safe.

Off by default (a library or notebook caller runs everything in its own process); the CLI turns
it on (:func:`enable`). Created on first use with the ``spawn`` start method (torch and forked
OpenMP threads do not mix) and reused; never used inside a child process (a sweep's or an
optimizer's worker runs its fits itself: no pools within pools) nor in a process forked from
the one that made it. Work handed to it must give the same result in a worker as in the caller
(single-threaded, seeded): the pool only changes where it runs. ``OFFRAMP_WORKERS`` caps its
size (1: everything runs in the calling process).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

_POOL: Any = None  # a concurrent.futures.ProcessPoolExecutor, made on first use
_OWNER: int | None = None  # the process that made _POOL
_ENABLED = False


def enable(on: bool = True) -> None:
    """Let :func:`map_independent` use the pool in this process (the CLI's entry point does)."""
    global _ENABLED
    _ENABLED = on


def workers() -> int:
    """Processes the pool may use: the cores this process may run on, capped by
    OFFRAMP_WORKERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cap = os.environ.get("OFFRAMP_WORKERS")
    return max(1, min(cores or 1, int(cap) if cap and cap.isdigit() else cores or 1))


def usable() -> bool:
    """Whether work would go to the pool here: enabled, more than one worker, in the process
    that may own it (not a child process, not a fork of its owner)."""
    if not _ENABLED or workers() < 2:
        return False
    import multiprocessing  # imported here: the CLI enables the pool before it parses

    return multiprocessing.parent_process() is None and _OWNER in (None, os.getpid())


def _pool() -> Any:
    global _POOL, _OWNER
    if _POOL is None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _POOL = ProcessPoolExecutor(max_workers=workers(),
                                    mp_context=multiprocessing.get_context("spawn"))
        _OWNER = os.getpid()
        atexit.register(_POOL.shutdown, cancel_futures=True)
    return _POOL


def map_independent(fn: Callable[..., Any], calls: Iterable[tuple]) -> list[Any]:
    """``[fn(*args) for args in calls]``, in order; spread over the pool where there is more
    than one call and the pool is :func:`usable` (``fn`` must be importable: a module-level
    function)."""
    calls = list(calls)
    if len(calls) < 2:
        return [fn(*args) for args in calls]
    return start_independent(fn, calls).results()


class Started:
    """Calls handed to the pool (or kept to run here, where it is not used): :meth:`results`
    waits for them in order; :meth:`cancel` drops those not begun (a caller that fails or
    stops early leaves no queued work behind)."""

    def __init__(self, fn: Callable[..., Any], calls: list[tuple], futures: list | None):
        self.fn, self.calls, self.futures = fn, calls, futures

    def results(self) -> list[Any]:
        if self.futures is None:
            return [self.fn(*args) for args in self.calls]
        try:
            return [f.result() for f in self.futures]
        except BaseException:
            self.cancel()
            raise

    def cancel(self) -> None:
        for f in self.futures or ():
            f.cancel()


class Pending(NamedTuple):
    """Work started for a caller that goes on meanwhile: ``collect()`` waits for it and returns
    its result; ``cancel()`` drops what has not begun (the caller failed or stopped)."""

    collect: Callable[[], Any]
    cancel: Callable[[], None]


def start_independent(fn: Callable[..., Any], calls: Iterable[tuple]) -> Started:
    """:func:`map_independent` started now: where the pool is :func:`usable` the calls run there
    while the caller goes on (even one call: it overlaps the caller's own work); elsewhere they
    run when their results are asked for."""
    calls = list(calls)
    if not calls or not usable():
        return Started(fn, calls, None)
    return Started(fn, calls, [_pool().submit(fn, *args) for args in calls])
