"""The process pools the commands use take the cores this process may run on, not the
machine's count (a job pinned to one core gets one worker)."""

from __future__ import annotations

import argparse
import os

import pytest

from offramp.analysis.cli.options import executor_for
from offramp.common import pool


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"),
                    reason="CPU affinity is Linux-only; elsewhere the pool takes the core count")
def test_a_sweeps_default_pool_follows_the_affinity(monkeypatch):
    monkeypatch.delenv("OFFRAMP_WORKERS", raising=False)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {sorted(before)[0]})
    try:
        assert pool.workers() == 1
        args = argparse.Namespace(scheduler=None, dask_local=None, workers=None)
        with executor_for(args) as (_, line):
            assert line == "process pool, 1 workers"
    finally:
        os.sched_setaffinity(0, before)
    monkeypatch.setenv("OFFRAMP_WORKERS", "1")
    assert pool.workers() == 1


def _square(x: int) -> int:
    _RAN.append(x)
    return x * x


_RAN: list[int] = []


def test_work_started_in_the_pool_gives_what_it_gives_in_order(monkeypatch):
    # start_independent hands the calls to the pool at once and the caller collects them
    # later, in order; without the pool they run only when their results are asked for.
    monkeypatch.setattr(pool, "_ENABLED", False)
    _RAN.clear()
    later = pool.start_independent(_square, [(3,), (4,)])
    assert _RAN == []
    assert later.results() == [9, 16] and _RAN == [3, 4]
    later.cancel()  # nothing queued: nothing to drop
    monkeypatch.setattr(pool, "_ENABLED", True)
    if not pool.usable():
        pytest.skip("one core: no pool to start work in")
    later = pool.start_independent(_square, [(x,) for x in range(6)])
    assert later.futures is not None and len(later.futures) == 6
    assert later.results() == [x * x for x in range(6)] == pool.map_independent(
        _square, [(x,) for x in range(6)])
