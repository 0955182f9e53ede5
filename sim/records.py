"""What one simulation run produces, as flat arrays, shared by both engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from offramp.core.modes import StageKind

N_KINDS = len(StageKind)  # width of the per-kind breakdown (StageKind.code order)


@dataclass
class RunRecords:
    """Per-request and per-batch results of one run, as flat arrays (rows in request-id order)."""

    arrival: np.ndarray
    sample: np.ndarray
    dispatch: np.ndarray
    finish: np.ndarray
    exit: np.ndarray
    replica: np.ndarray
    batch: np.ndarray  # global batch id, in (dispatch time, replica) order
    batch_replica: np.ndarray
    batch_dispatch: np.ndarray
    batch_finish: np.ndarray
    batch_sizes: np.ndarray  # (n_batches, K): batch size at each stage, 0 if not run
    # (n, N_KINDS): seconds of each stage kind in each request's service, from its batch's
    # dispatch to its exit (they add up to finish - dispatch); None where not recorded.
    parts: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def number_batches(replica: np.ndarray, local: np.ndarray, b_replica: np.ndarray,
                   b_local: np.ndarray, b_dispatch: np.ndarray, batch_of: np.ndarray | None = None
                   ) -> tuple[np.ndarray | slice, np.ndarray]:
    """Global batch ids in (dispatch, replica, local) order.

    Returns (order of the batch arrays, global id of each request). ``batch_of``: each
    request's row in the batch arrays, where known: if those are already in order (dispatch
    times strictly increasing) it is the answer, and the order is the identity (``slice``).
    """
    if batch_of is not None and np.all(b_dispatch[1:] > b_dispatch[:-1]):
        return slice(None), batch_of
    order = np.lexsort((b_local, b_replica, b_dispatch))
    gid = np.empty_like(order)
    gid[order] = np.arange(order.size)
    # Map (replica, local) of each request to its batch row.
    n_rep = int(max(b_replica.max(), replica.max())) + 1 if b_replica.size else 1
    width = int(b_local.max()) + 1 if b_local.size else 1
    lookup = np.empty(n_rep * width, dtype=np.int64)
    lookup[b_replica * width + b_local] = gid
    return order, lookup[replica * width + local]


def from_requests(reqs: list[Any], b: list[tuple], k_exits: int) -> RunRecords:
    """The run's flat records from the reference engine's request objects and its batches' (replica, local
    count, dispatch, finish, sizes, time by kind at each exit)."""
    replica = np.array([q.replica for q in reqs], dtype=np.int64)
    local = np.array([q.local for q in reqs], dtype=np.int64)
    b_rep = np.array([x[0] for x in b], dtype=np.int64)
    b_loc = np.array([x[1] for x in b], dtype=np.int64)
    b_disp = np.array([x[2] for x in b])
    order, gid = number_batches(replica, local, b_rep, b_loc, b_disp)
    exits = np.array([q.exit for q in reqs], dtype=np.int64)
    if reqs and reqs[0].parts is not None:  # rebatch: each request's own sum over its batches
        parts = np.array([q.parts for q in reqs], dtype=float)
        extra = {"between_s": np.array([q.between for q in reqs])}
    else:
        parts = np.array([x[5] for x in b], dtype=float).reshape(-1, k_exits, N_KINDS)[
            order][gid, exits]
        extra = {}
    return RunRecords(
        arrival=np.array([q.arrival for q in reqs]),
        sample=np.array([q.sample for q in reqs], dtype=np.int64),
        dispatch=np.array([q.dispatch for q in reqs]),
        finish=np.array([q.finish for q in reqs]),
        exit=exits, replica=replica, batch=gid, batch_replica=b_rep[order],
        batch_dispatch=b_disp[order], batch_finish=np.array([x[3] for x in b])[order],
        batch_sizes=np.array([x[4] for x in b], dtype=np.int64).reshape(-1, k_exits)[order],
        parts=parts, extra=extra,
    )
