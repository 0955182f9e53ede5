"""A binary min-heap of events in NumPy arrays, ordered by (time, sequence number), for the
compiled event loop (:mod:`.fast_events`): ``ht`` the times, ``hi[:, 0]`` the sequence
numbers (ties of time go in the order events were scheduled), ``hi[:, 1:]`` the payload.
Plain Python over arrays, compiled by numba where it is installed.
"""

from __future__ import annotations

from .fast_kernels import numba


def _less(ht, hi, a, b):
    return ht[a] < ht[b] or (ht[a] == ht[b] and hi[a, 0] < hi[b, 0])


def _swap(ht, hi, a, b):
    ht[a], ht[b] = ht[b], ht[a]
    for c in range(hi.shape[1]):
        hi[a, c], hi[b, c] = hi[b, c], hi[a, c]


def push(ht, hi, size, t, seq, a, b):
    """Add (t, seq, a, b) to the binary heap of ``size`` entries, ordered by (t, seq)."""
    i = size
    ht[i], hi[i, 0], hi[i, 1], hi[i, 2] = t, seq, a, b
    while i > 0:
        p = (i - 1) // 2
        if not _less(ht, hi, i, p):
            break
        _swap(ht, hi, i, p)
        i = p
    return size + 1


def pop(ht, hi, size):
    """Remove the top entry (row 0; read it first); returns the new size."""
    size -= 1
    _swap(ht, hi, 0, size)
    i = 0
    while 2 * i + 1 < size:
        c = 2 * i + 1
        if c + 1 < size and _less(ht, hi, c + 1, c):
            c += 1
        if not _less(ht, hi, c, i):
            break
        _swap(ht, hi, i, c)
        i = c
    return size


if numba is not None:  # compiled; each finds the others' compiled twins among the globals
    for _fn in (_less, _swap, push, pop):
        globals()[_fn.__name__] = numba.njit(cache=True)(_fn)
