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
    # (n_batches, K, N_KINDS): seconds of each stage kind from dispatch until exit k's leavers
    # finish (0 where the batch never decides at exit k); None where not recorded (real runs).
    batch_parts: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def number_batches(replica: np.ndarray, local: np.ndarray, b_replica: np.ndarray,
                   b_local: np.ndarray, b_dispatch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global batch ids in (dispatch, replica, local) order.

    Returns (order of the batch arrays, global id of each request).
    """
    order = np.lexsort((b_local, b_replica, b_dispatch))
    gid = np.empty_like(order)
    gid[order] = np.arange(order.size)
    # Map (replica, local) of each request to its batch row.
    n_rep = int(max(b_replica.max(), replica.max())) + 1 if b_replica.size else 1
    width = int(b_local.max()) + 1 if b_local.size else 1
    lookup = np.empty(n_rep * width, dtype=np.int64)
    lookup[b_replica * width + b_local] = gid
    return order, lookup[replica * width + local]
