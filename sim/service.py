"""Stage service times for the simulator, as tables indexed by stage slot and batch size.

Slots: 0 is the per-batch overhead, then K segments, K heads and K-1 compactions. Random
spread comes from a :class:`NoiseStream` per replica, one row per batch in dispatch order, so
every engine that serves the same batches draws the same numbers.
"""

from __future__ import annotations

import math

import numpy as np

from offramp.profiling.latency import LatencyModel

ROWS_PER_CHUNK = 1024


class NoiseStream:
    """Rows of standard variates (normal or exponential), generated in fixed-size chunks."""

    def __init__(self, rng: np.random.Generator, width: int, dist: str):
        self.rng, self.width, self.dist = rng, width, dist
        self._chunks: list[list[list[float]]] = []

    def row(self, m: int) -> list[float]:
        c, r = divmod(m, ROWS_PER_CHUNK)
        while len(self._chunks) <= c:
            shape = (ROWS_PER_CHUNK, self.width)
            draw = (self.rng.standard_normal(shape) if self.dist == "lognormal"
                    else self.rng.standard_exponential(shape))
            self._chunks.append(draw.tolist())
        return self._chunks[c][r]


class ServiceTimes:
    """Stage durations (s) of a K-exit model for batch sizes 0..max_batch.

    ``dist``: ``fixed`` (the p50 or a constant), ``lognormal`` (p50·exp(σ·z)) or
    ``exponential`` (mean·E).
    """

    def __init__(self, base_s: np.ndarray, sigma: np.ndarray, dist: str, n_exits: int):
        self.base = base_s.tolist()
        self.sigma = sigma.tolist()
        self.dist = dist
        self.n_exits = n_exits
        self.max_batch = base_s.shape[1] - 1

    # Slot numbers.
    OVERHEAD = 0

    def seg(self, k: int) -> int:
        return 1 + k

    def head(self, k: int) -> int:
        return 1 + self.n_exits + k

    def compact(self, k: int) -> int:
        return 1 + 2 * self.n_exits + k

    @property
    def width(self) -> int:
        return 3 * self.n_exits

    @property
    def random(self) -> bool:
        return self.dist != "fixed"

    def duration(self, slot: int, b: int, z: list[float] | None) -> float:
        """Duration (s) of one stage at batch size b, with this batch's noise row ``z``."""
        if self.dist == "fixed":
            return self.base[slot][b]
        if self.dist == "lognormal":
            return self.base[slot][b] * math.exp(self.sigma[slot][b] * z[slot])
        return self.base[slot][b] * z[slot]

    @classmethod
    def from_latency(cls, model: LatencyModel, n_exits: int, max_batch: int, sampled: bool,
                     need_compact: bool) -> ServiceTimes:
        """Tables from a measured profile; compaction only where the exit mode uses it."""
        width = 3 * n_exits
        base = np.zeros((width, max_batch + 1))
        sigma = np.zeros_like(base)
        stages = [("overhead", 0, 0)]
        stages += [("segment", k, 1 + k) for k in range(n_exits)]
        stages += [("head", k, 1 + n_exits + k) for k in range(n_exits)]
        if need_compact:
            stages += [("compact", k, 1 + 2 * n_exits + k) for k in range(n_exits - 1)]
        for kind, k, slot in stages:
            base[slot], sigma[slot] = model.table(kind, k, max_batch)
        return cls(base / 1000.0, sigma, "lognormal" if sampled else "fixed", n_exits)

    @classmethod
    def analytic(cls, kind: str, mean_ms: float, n_exits: int, max_batch: int) -> ServiceTimes:
        """A whole batch takes ``mean_ms`` (fixed or exponential), whatever its size.

        The time sits in segment 0; every other stage is free. Used with exit mode ``none``.
        """
        base = np.zeros((3 * n_exits, max_batch + 1))
        base[1, 1:] = mean_ms / 1000.0
        return cls(base, np.zeros_like(base), "fixed" if kind == "deterministic" else "exponential",
                   n_exits)
