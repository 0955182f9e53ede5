"""The batching rule (Triton-style dynamic batching), one pure function for every server.

A free server takes the next batch when ``max_batch`` requests are waiting or the oldest has
waited ``max_wait_s``, whichever is first, and never before it is free; once the stream has
ended (``end_s``: the last arrival) the rest go at once. The fast engine and the real serving
loop call these; the per-request SimPy reference stays the independent check of the rule.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence


def dispatch_time(arrivals: Sequence[float], i: int, max_batch: int, max_wait_s: float,
                  end_s: float) -> float:
    """When the batch whose oldest request is ``arrivals[i]`` closes (the server aside)."""
    close = arrivals[i] + max_wait_s
    last = i + max_batch - 1
    if last < len(arrivals):
        if arrivals[last] < close:
            close = arrivals[last]
    elif end_s < close:
        close = end_s
    return close


def dispatch(arrivals: Sequence[float], i: int, free_s: float, max_batch: int, max_wait_s: float,
             end_s: float) -> tuple[float, int]:
    """(dispatch time, end index j): the batch ``arrivals[i:j]`` goes at the later of the
    server being free (``free_s``) and :func:`dispatch_time`, and takes every request that has
    arrived by then, at most ``max_batch``."""
    close = dispatch_time(arrivals, i, max_batch, max_wait_s, end_s)
    d = free_s if free_s > close else close
    n = len(arrivals)
    return d, bisect_right(arrivals, d, i, i + max_batch if i + max_batch < n else n)
