"""Arrival processes and request routing for the open-loop workloads.

Inter-arrival gaps are drawn whole (no clipping) so the generators keep their rate and CV;
arrival times are their running sum, in seconds.
"""

from __future__ import annotations

import numpy as np

from .config import WorkloadConfig

CHUNK = 65_536


def _gaps(cfg: WorkloadConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    mean = 1.0 / cfg.rate_rps
    if cfg.kind == "poisson":
        return rng.exponential(mean, n)
    if cfg.kind == "gamma":
        shape = 1.0 / cfg.cv**2
        return rng.gamma(shape, mean / shape, n)
    raise ValueError(f"{cfg.kind} is not an open-loop workload")


def open_loop_arrivals(cfg: WorkloadConfig, rng: np.random.Generator, n: int | None = None,
                       duration_s: float | None = None) -> np.ndarray:
    """Arrival times (s) of ``n`` requests, or of every request before ``duration_s``."""
    if n is not None:
        return np.cumsum(_gaps(cfg, rng, n))
    assert duration_s is not None
    parts, total, t0 = [], 0, 0.0
    while True:
        chunk = t0 + np.cumsum(_gaps(cfg, rng, CHUNK))
        inside = chunk[chunk < duration_s]
        parts.append(inside)
        total += inside.size
        if inside.size < CHUNK:
            return np.concatenate(parts)
        t0 = float(chunk[-1])


def route_static(routing: str, n: int, replicas: int, rng: np.random.Generator) -> np.ndarray:
    """Replica of each request for state-independent routing (round robin, random)."""
    if routing == "round_robin":
        return np.arange(n) % replicas
    if routing == "random":
        return rng.integers(0, replicas, n)
    raise ValueError(f"routing {routing!r} depends on server state")
