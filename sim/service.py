"""Stage service times for the simulator, as tables indexed by stage slot and batch size.

Slots: 0 is the per-batch overhead, then K segments, K heads and K-1 compactions, and, where
the profile measured them, K-1 exit checks and K-1 handoffs (after those, so a profile without
them draws exactly the noise it always did). Random
spread comes from a :class:`NoiseStream` per replica, one row per batch in dispatch order, so
every engine that serves the same batches draws the same numbers.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from offramp.core.execution import BatchPlan, timeline
from offramp.core.modes import ExitMode, StageKind
from offramp.profiling.latency import LatencyModel, describe_costs, noisy_stages

ROWS_PER_CHUNK = 1024

# The slot layout (the noise row's layout): slot 0 the overhead, then the rows of each kind in
# this order, one per exit (K segments and heads, K-1 compactions, checks and handoffs). Kept
# as first written, so a profile without the loop's stages draws the noise it always did.
SLOT_KINDS = (StageKind.SEGMENT, StageKind.HEAD, StageKind.COMPACT, StageKind.CHECK,
              StageKind.HANDOFF)
LOOP_KINDS = frozenset(kind for kind in StageKind if kind.is_loop)


def slot_offsets(n_exits: int) -> dict[StageKind, int]:
    """The first slot of each stage kind for a K-exit model (exit k's row is offset + k)."""
    offset = {StageKind.OVERHEAD: 0}
    for j, kind in enumerate(SLOT_KINDS):
        offset[kind] = 1 + j * n_exits - (1 if j > 2 else 0)
    return offset


@dataclass(frozen=True)
class NoiseCorrelation:
    """How a replica's stage noise hangs together (both 0: every stage of every batch draws
    its own z). ``within``: the correlation of the z's of one batch's stages; ``across``: how
    much of the shared part carries over to the next batch the replica serves (an AR(1)
    coefficient: a slow spell of the machine lasts several batches)."""

    within: float = 0.0
    across: float = 0.0

    @property
    def active(self) -> bool:
        return self.within > 0


class NoiseStream:
    """Rows of log-noise z, one per batch, drawn in fixed-size chunks.

    ``lognormal``: z ~ N(0, 1); ``exponential``: z = log E, E ~ Exp(1); ``fixed``: z = 0 and
    nothing is drawn. A stage then lasts base · exp(σ · z) in every case. With a
    :class:`NoiseCorrelation` (lognormal only) z = √ρ·s_m + √(1−ρ)·e: s_m is shared by row m's
    stages and follows s_m = φ·s_{m−1} + √(1−φ²)·u_m (ρ = ``within``, φ = ``across``), e is
    each stage's own; every z stays N(0, 1), so each stage keeps its p50 and p99. Without one
    it draws exactly what it always drew.
    """

    def __init__(self, rng: np.random.Generator, width: int, dist: str,
                 corr: NoiseCorrelation | None = None):
        self.rng, self.width, self.dist = rng, width, dist
        self.corr = corr if corr is not None and corr.active and dist == "lognormal" else None
        self.shared: float | None = None  # s of the last row drawn (correlated streams)
        # Row m is flat[m * width : (m + 1) * width]; a fixed stream is one zero row, reused.
        self.flat: list[float] = [0.0] * width if dist == "fixed" else []
        self.zero = [0.0] * width

    def offset(self, m: int) -> int:
        """Where row m starts in ``flat`` (drawing it first if needed)."""
        if self.dist == "fixed":
            return 0
        o = m * self.width
        if o >= len(self.flat):
            self.extend(m)
        return o

    def extend(self, m: int) -> None:
        """Draw chunks until row ``m`` exists (no-op for ``fixed``)."""
        if self.dist == "fixed":
            return
        while len(self.flat) <= m * self.width:
            self.flat.extend(self.draw_chunk().tolist())

    def draw_chunk(self) -> np.ndarray:
        """The next ``ROWS_PER_CHUNK`` rows, flattened (the compiled engine reads chunks as
        arrays; :meth:`extend` appends them to ``flat``: both see the same numbers)."""
        if self.corr is not None:
            return self._correlated()
        shape = (ROWS_PER_CHUNK * self.width,)
        return (self.rng.standard_normal(shape) if self.dist == "lognormal"
                else np.log(self.rng.standard_exponential(shape)))

    def _correlated(self) -> np.ndarray:
        """One chunk of correlated rows, flattened (see the class docstring)."""
        rho, phi = self.corr.within, self.corr.across
        draw = self.rng.standard_normal((ROWS_PER_CHUNK, self.width + 1))
        u = draw[:, 0]
        first = u[0] if self.shared is None else phi * self.shared + math.sqrt(1 - phi * phi) * u[0]
        s, _ = lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], u[1:], zi=[phi * first])
        shared = np.r_[first, s]
        self.shared = float(shared[-1])
        return (math.sqrt(rho) * shared[:, None] + math.sqrt(1 - rho) * draw[:, 1:]).ravel()

    def row(self, m: int) -> list[float]:
        if self.dist == "fixed":
            return self.zero
        self.extend(m)
        return self.flat[m * self.width:(m + 1) * self.width]


def on_grid(row, grid, x):  # noqa: ANN001, ANN201 - lists or arrays (compiled by fast_numba)
    """``row`` at ``x``: linear between the points of ``grid`` (ascending, ``row`` one value
    per point), flat beyond the last; ``x`` is never below the first."""
    if x >= grid[-1]:
        return row[-1]
    i = bisect_right(grid, x, 0, len(grid)) - 1
    f = (x - grid[i]) / (grid[i + 1] - grid[i])
    return row[i] + f * (row[i + 1] - row[i])


class LoopState:
    """How a replica's idle time scales its stages (``served_costs`` of a profile, fitted by
    :mod:`offramp.profiling.served`): a batch dispatched after ``idle`` seconds runs each stage
    ``factor[idle bin][slot]`` times its drawn time."""

    def __init__(self, idle_edges_s: list[float], factor: list[list[float]]):
        self.idle_edges_s, self.factor = idle_edges_s, factor  # factor[idle bin][slot]

    @classmethod
    def from_table(cls, table: dict, slot_kinds: list[StageKind]) -> LoopState:
        f = table["factor"]
        return cls([e / 1000.0 for e in table["idle_edges_ms"]],
                   [[f[kind]["idle"][i] for kind in slot_kinds]
                    for i in range(len(table["idle_edges_ms"]) + 1)])

    def at_dispatch(self, idle_s: float) -> list[float]:
        """The per-slot factors of a batch dispatched after ``idle_s`` idle."""
        return self.factor[bisect_right(self.idle_edges_s, idle_s)]


class ServiceTimes:
    """Stage durations (s) of a K-exit model for batch sizes 0..max_batch.

    A stage lasts base · exp(σ · z) with z from the batch's :class:`NoiseStream` row:
    ``fixed`` (z = 0: the p50 or a constant), ``lognormal`` (the measured spread) or
    ``exponential`` (σ = 1, z = log E: an exponential with mean ``base``).
    """

    def __init__(self, base_s: np.ndarray, sigma: np.ndarray, dist: str, n_exits: int,
                 corr: NoiseCorrelation | None = None):
        self.base = base_s.tolist()
        self.corr = corr or NoiseCorrelation()  # how stage noise hangs together (NoiseStream)
        self.sigma = sigma.tolist()
        self.dist = dist
        self.n_exits = n_exits
        self.max_batch = base_s.shape[1] - 1
        self._width = base_s.shape[0]
        # The serving loop's own stages have tables only where the profile measured them.
        self.skip = frozenset() if self._width == 5 * n_exits else LOOP_KINDS
        self._offset = slot_offsets(n_exits)
        # Per stage kind, (its first table row, its code), or None where the tables skip it.
        self.kind_rows: dict[StageKind, tuple[int, int] | None] = {
            kind: None if kind in self.skip else (self._offset[kind], kind.code)
            for kind in StageKind}
        # wake[b][i]: extra seconds of a batch of b after an idle of IDLE_GRID_S[i] (None: none).
        self.wake: list[list[float]] | None = None
        # tail[b]: seconds the replica stays busy after a batch of b's last stage (None: none).
        self.tail: list[float] | None = None
        # The replica's idle time scales every stage (profiling/served.py); None: it does not.
        self.state: LoopState | None = None
        # Which cost model and calibration the tables come from (for summaries and reports).
        self.costs: dict = {"model": "given"}

    IDLE_GRID_S = tuple(x / 1000.0 for x in (0.0, 0.25, 0.5, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50,
                                               100))

    def wake_s(self, b: int, idle_s: float) -> float:
        """Extra seconds of a batch of b dispatched after the replica idled ``idle_s``
        (linear between the grid points, flat beyond the last)."""
        return on_grid(self.wake[b], self.IDLE_GRID_S, idle_s)

    def slot(self, kind: StageKind, k: int) -> int:
        """The table row of stage ``kind`` at exit ``k`` (see :data:`SLOT_KINDS`)."""
        return self._offset[kind] + k

    def slot_kinds(self) -> list[StageKind]:
        """The stage kind of every slot (a slot no stage uses takes the kind before it)."""
        kinds = [StageKind.OVERHEAD] * self._width
        for kind in SLOT_KINDS:
            first = self._offset[kind]
            if first < self._width:
                kinds[first:] = [kind] * (self._width - first)
        return kinds

    @property
    def width(self) -> int:
        return self._width

    def plan_s(self, plan: BatchPlan) -> float:
        """Time (s) of a batch's whole schedule at the base (p50) stage times (its lanes'
        :func:`~offramp.core.execution.timeline`: in order, the sum)."""
        return timeline(plan, [0.0 if s.kind in self.skip else
                               self.base[self.slot(s.kind, s.k)][s.batch] for s in plan.stages])[0]

    def duration(self, slot: int, b: int, z: list[float]) -> float:
        """Duration (s) of one stage at batch size b, with this batch's noise row ``z``."""
        return self.base[slot][b] * math.exp(self.sigma[slot][b] * z[slot])

    @classmethod
    def from_latency(cls, model: LatencyModel, *, n_exits: int, max_batch: int, mode: ExitMode,
                     sampled: bool) -> ServiceTimes:
        """Tables from a measured profile; compaction only where the exit ``mode`` compacts, the
        serving loop's check and handoff only where the profile has them (else they are 0);
        ``sampled``: stage times drawn from the measured spread (else their p50)."""
        mode = ExitMode.parse(mode)
        loop = any(model.profile.has(kind) for kind in LOOP_KINDS)
        width = (5 if loop else 3) * n_exits
        base = np.zeros((width, max_batch + 1))
        sigma = np.zeros_like(base)
        offset = slot_offsets(n_exits)
        stages = [(StageKind.OVERHEAD, 0)]
        for kind in SLOT_KINDS:
            if kind is StageKind.COMPACT and not mode.compacts or kind.is_loop and not loop:
                continue
            stages += [(kind, k) for k in range(n_exits if kind.is_model else n_exits - 1)]
        for kind, k in stages:
            slot = offset[kind] + k
            base[slot], sigma[slot] = model.table(kind, k, max_batch)
        svc = cls(base / 1000.0, sigma, "lognormal" if sampled else "fixed", n_exits,
                  NoiseCorrelation(*getattr(model, "noise_corr", (0.0, 0.0))))
        if getattr(model, "tail", None) is not None:
            svc.tail = [model.tail_ms(b) / 1000.0 for b in range(max_batch + 1)]
        if getattr(model, "state", None) is not None:
            svc.state = LoopState.from_table(model.state, svc.slot_kinds())
        if getattr(model, "wake", None) is not None:
            svc.wake = [[model.wake_ms(b, 1000.0 * t) / 1000.0 for t in cls.IDLE_GRID_S]
                        for b in range(max_batch + 1)]
        svc.costs = describe_costs(model)
        noisy = noisy_stages(model, max_batch) if sampled else []
        if noisy:  # a tail too wide to trust: say so wherever the costs are shown
            svc.costs["noisy_stages"] = noisy
        return svc

    @classmethod
    def analytic(cls, kind: str, mean_ms: float, n_exits: int, max_batch: int) -> ServiceTimes:
        """A whole batch takes ``mean_ms`` (fixed or exponential), whatever its size.

        The time sits in segment 0; every other stage is free. Used with exit mode ``none``.
        """
        base = np.zeros((3 * n_exits, max_batch + 1))
        base[1, 1:] = mean_ms / 1000.0
        fixed = kind == "deterministic"
        svc = cls(base, np.zeros_like(base) if fixed else np.ones_like(base),
                  "fixed" if fixed else "exponential", n_exits)
        svc.costs = {"model": "analytic", "kind": kind, "mean_ms": mean_ms}
        return svc
