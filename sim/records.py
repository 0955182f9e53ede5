"""What one simulation run produces, as flat arrays, shared by both engines."""

from __future__ import annotations

from dataclasses import dataclass, field

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
