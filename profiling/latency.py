"""The latency model: how long stage X takes at batch size b, from a measured profile.

Exact where measured, linearly interpolated between measured sizes, rounded up to the next
engine size for bucketed engines, and never extrapolated. Deterministic (the p50) or sampled:
a lognormal with the measured p50 as median and the measured p99 as its 99th percentile.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from offramp.common.errors import InputError
from offramp.core.execution import Stage
from offramp.core.modes import CostModel, StageKind

from .format import LatencyProfile

Z99 = 2.3263478740408408  # standard normal 99th percentile
# A robust tail: a stage's sampled lognormal never puts its p99 beyond this many times its p50
# (a measured spread past it is interference while timing, not the stage; `offramp profile
# show` flags spreads past 10x). No shipped profile's stage reaches it.
MAX_TAIL_RATIO = 20.0
MAX_SIGMA = math.log(MAX_TAIL_RATIO) / Z99


class LatencyModel:
    """Stage latency lookups over a :class:`LatencyProfile`.

    ``engine_sizes``: batch sizes for which an engine exists; a batch of b runs on the smallest
    engine size >= b (PAME's bucketed TensorRT engines). ``None`` means every size is available.
    ``costs`` (:class:`CostModel`) says which of the profile's calibrations is used.
    ``ISOLATED``: each stage as the profiler timed it alone.
    ``IN_LOOP``: each segment and head costs what it cost inside the serving loop: its in-loop
    p50 at that size (``in_loop_residual_ms[...]["served_p50_ms"]``, interpolated) where the
    profile has it, else its isolated time plus the median in-loop residual; its tail is the
    in-loop p99 (``served_p99_ms``) where the profile has it, else the isolated p99/p50
    ratio. ``IN_LOOP`` also takes the profile's ``stage_noise_corr`` as ``noise_corr``: how
    strongly one batch's stages run slow or fast together, and how much of that carries over
    to the next batch ((0, 0) otherwise: every stage's noise independent), and its
    ``batch_tail_ms`` (:meth:`tail_ms`) and its wake-up table.
    ``SERVED``: the profile's ``served_costs`` (stage costs fitted on the real loop's served
    streams, :mod:`offramp.profiling.served`) give each stage's p50 and σ, the noise
    correlation and the tail (the in-loop tables where they have no row), and :attr:`state`
    (that table) makes the simulator scale each stage by its replica's idle time before the
    batch instead of adding a wake-up.
    Build one with :func:`stage_costs` (which checks the profile holds the calibration asked for).
    Its tables are fixed when it is built (:meth:`lookup` remembers its answers): build a new
    one rather than change its attributes.
    """

    def __init__(self, profile: LatencyProfile, engine_sizes: Sequence[int] | None = None,
                 costs: CostModel | str = CostModel.ISOLATED):
        self.profile = profile
        self.costs = CostModel(costs)
        self.engine_sizes = sorted(set(engine_sizes)) if engine_sizes else None
        in_loop = self.costs is not CostModel.ISOLATED
        residual = (profile.meta.get("in_loop_residual_ms") or {}) if in_loop else {}
        self.extra_ms = {tuple(key.split(" ")): max(0.0, float(v["median_ms"]))
                         for key, v in residual.items()}
        self.served = {tuple(key.split(" ")): np.array(v["served_p50_ms"], dtype=float)
                       for key, v in residual.items() if v.get("served_p50_ms")}
        self.served_tail = {tuple(key.split(" ")): np.array(v["served_p99_ms"], dtype=float)
                            for key, v in residual.items() if v.get("served_p99_ms")}
        served = ((profile.meta.get("served_costs") or None) if self.costs is CostModel.SERVED
                  else None)
        # Costs fitted on served traffic (profiling/served.py) replace the profiler's where given.
        self.state = served
        self.served_stages = {tuple(key.split(" ")): np.array(rows, dtype=float)[:, :3]
                              for key, rows in served["stages"].items()} if served else {}
        corr = ((served or {}).get("noise_corr") or profile.meta.get("stage_noise_corr") or {}
                ) if in_loop else {}
        self.noise_corr = (float(corr.get("within", 0.0)), float(corr.get("across", 0.0)))
        tail = ((served or {}).get("batch_tail_ms") or profile.meta.get("batch_tail_ms")
                ) if in_loop else None
        self.tail = (np.array(tail["batch"], dtype=float), np.array(tail["ms"], dtype=float)
                     ) if tail and tail["batch"] else None
        wake = profile.meta.get("wake_ms") if in_loop and not served else None
        self.wake = None
        self._looked: dict[tuple, tuple[float, float]] = {}  # lookup's answers (it is pure)
        if wake:
            self.wake = (np.array(wake["batch"], dtype=float),
                         np.r_[0.0, np.array(wake["idle_ms"], dtype=float)],
                         np.array([[0.0, *row] for row in wake["extra_ms"]], dtype=float))

    def wake_ms(self, b: int, idle_ms: float) -> float:
        """Extra time (ms) of a batch of b that starts after the loop idled ``idle_ms``: the
        profile's ``wake_ms`` table (measured in the loop after sleeps), interpolated in idle
        time and batch size, flat beyond its ends; 0 without ``in_loop`` or a table."""
        if self.wake is None or b <= 0:
            return 0.0
        batches, idles, extra = self.wake
        per_b = [float(np.interp(idle_ms, idles, row)) for row in extra]
        return max(0.0, float(np.interp(b, batches, per_b)))

    def tail_ms(self, b: int) -> float:
        """The loop's time around a batch of b that no stage holds (ms; the profile's
        ``batch_tail_ms``, interpolated, flat beyond its ends); 0 without ``in_loop`` or it."""
        if self.tail is None or b <= 0:
            return 0.0
        return max(0.0, float(np.interp(b, *self.tail)))

    def _engine_size(self, b: int) -> int:
        if self.engine_sizes is None:
            return b
        for size in self.engine_sizes:
            if size >= b:
                return size
        raise InputError("server.engine_sizes", None, f"batch of {b} is larger than the largest "
                         f"engine size {self.engine_sizes[-1]}",
                         "add an engine size >= max_batch or lower max_batch")

    def lookup(self, kind: StageKind, k: int, b: int) -> tuple[float, float]:
        """(p50 in ms, lognormal sigma) of stage (kind, k) at batch size b; (0, 0) at b = 0."""
        if b == 0:
            return 0.0, 0.0
        found = self._looked.get((kind, k, b))
        if found is None:
            found = self._looked[(kind, k, b)] = self._lookup(kind, k, b)
        return found

    def _lookup(self, kind: StageKind, k: int, b: int) -> tuple[float, float]:
        rows = self.profile.stage(kind, k)
        if not rows:
            if StageKind(kind).optional:
                return 0.0, 0.0
            from offramp.profiling.summary import how_to_supply

            raise InputError(self.profile.source, "rows", f"no {kind} rows for exit {k}, which "
                             "this study's exit mode needs", how_to_supply([f"{kind} {k}"]))
        size = self._engine_size(b)
        sizes = [r["batch"] for r in rows]
        lo, hi = sizes[0], sizes[-1]
        if not lo <= size <= hi:
            raise InputError(self.profile.source, "rows",
                             f"{kind} {k} is measured for batch sizes {lo}..{hi}, and a batch of "
                             f"{size} was asked for (server.max_batch, or a cost batch, above "
                             f"{hi})", f"use server.max_batch <= {hi} (--max-batch, "
                             "--cost-batch), or measure larger batches")
        p50 = np.array([r["p50_ms"] for r in rows], dtype=float)
        p99 = np.array([r["p99_ms"] for r in rows], dtype=float)
        median = float(np.interp(size, sizes, p50))
        tail = float(np.interp(size, sizes, p99))
        fitted = self.served_stages.get((kind, str(k)))
        if fitted is not None and fitted[0, 0] <= size <= fitted[-1, 0]:
            return (float(np.interp(size, fitted[:, 0], fitted[:, 1])),
                    float(np.interp(size, fitted[:, 0], fitted[:, 2])))
        served = self.served.get((kind, str(k)))
        if served is not None and served[0, 0] <= size <= served[-1, 0]:
            loop_ms = float(np.interp(size, served[:, 0], served[:, 1]))
            loop_tail = self.served_tail.get((kind, str(k)))
            if loop_tail is not None:
                tail = max(loop_ms, float(np.interp(size, loop_tail[:, 0], loop_tail[:, 1])))
            else:
                tail = tail * loop_ms / median if median > 0 else loop_ms
            median = loop_ms
        else:
            extra = self.extra_ms.get((kind, str(k)), 0.0)
            median, tail = median + extra, tail + extra
        sigma = math.log(tail / median) / Z99 if median > 0 and tail > median else 0.0
        return median, min(sigma, MAX_SIGMA)

    def stages_ms(self, stages: Iterable[Stage]) -> float:
        """Total p50 (ms) of a sequence of stages (see :mod:`offramp.profiling.stages`)."""
        return float(sum(self.lookup(s.kind, s.k, s.batch)[0] for s in stages))

    def table(self, kind: StageKind, k: int, max_batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(p50 ms, sigma) for b = 0..max_batch, as arrays indexed by b."""
        out = np.array([self.lookup(kind, k, b) for b in range(max_batch + 1)])
        return out[:, 0], out[:, 1]


IN_LOOP_TABLES = ("in_loop_residual_ms", "wake_ms", "batch_tail_ms", "stage_noise_corr")


def calibrations(profile: LatencyProfile) -> list[CostModel]:
    """The cost models this profile can give, least to most calibrated."""
    held = [CostModel.ISOLATED]
    if any(profile.meta.get(name) for name in IN_LOOP_TABLES):
        held.append(CostModel.IN_LOOP)
    if profile.meta.get("served_costs"):
        held.append(CostModel.SERVED)
    return held


def stage_costs(profile: LatencyProfile, costs: CostModel | str | None = None,
                engine_sizes: Sequence[int] | None = None) -> LatencyModel:
    """The one constructor of stage costs for every command (simulate, capacity, sweep, demo,
    frontier, fit, validate's simulated side): ``costs`` from the profile, or the most
    calibrated one it holds where ``costs`` is None."""
    held = calibrations(profile)
    want = held[-1] if costs is None else CostModel(costs)
    if want not in held:
        fix = ("calibrate it on the real loop (offramp profile calibrate) or set profile.costs: "
               f"{held[-1].value}" if want is CostModel.SERVED else
               f"measure it with the eager backend (offramp profile run), or set profile.costs: "
               f"{held[-1].value}")
        raise InputError(profile.source, "meta", f"holds no {want.value} calibration (it holds "
                         f"{', '.join(c.value for c in held)})", fix)
    return LatencyModel(profile, engine_sizes, want)


def costs_machine(model: LatencyModel) -> str:
    """The machine a cost model's stage times describe: for a served calibration the one it
    was fitted (or last re-levelled) on, where recorded, else the one the profile's rows were
    measured on."""
    meta = model.profile.meta
    served = meta.get("served_costs") or {}
    # A re-levelled table's levels describe the machine of its re-levelling stream.
    fitted = served.get("relevelled") or served.get("fitted_on") or {}
    machine = fitted.get("machine") or {}
    if model.costs is CostModel.SERVED and (machine.get("gpu") or machine.get("cpu")):
        return machine.get("gpu") or machine["cpu"]
    return str(meta.get("device", "?"))


def describe_costs(model: LatencyModel) -> dict:
    """Which cost model and calibration a prediction used (for summaries and reports)."""
    meta = model.profile.meta
    doc = {"model": model.costs.value, "profile": str(model.profile.source),
           "device": meta.get("device"), "measured": meta.get("date"),
           "machine": costs_machine(model)}
    served = meta.get("served_costs") if model.costs is CostModel.SERVED else None
    if served:
        doc["calibration"] = {k: served[k] for k in ("fitted_on", "sources", "stage_times")
                              if k in served}
        if served.get("relevelled"):  # what moved its levels, without the long lists
            doc["calibration"]["relevelled"] = {k: v for k, v in served["relevelled"].items()
                                                if k not in ("sources", "own")}
    return doc



def noisy_stages(model: LatencyModel, max_batch: int, ratio: float = 5.0,
                 min_extra_ms: float = 0.5) -> list[str]:
    """Stages whose sampled tail is implausible for a study up to ``max_batch``: p99 more than
    ``ratio`` × p50 and more than ``min_extra_ms`` above it at some batch size (a profile too
    noisy to trust there; its p99 would put absurd tails into the simulation)."""
    out = []
    for kind, k in sorted({(r["kind"], r["k"]) for r in model.profile.rows}):
        for b in range(1, max_batch + 1):
            try:
                p50, sigma = model.lookup(StageKind(kind), k, b)
            except InputError:
                break
            p99 = p50 * math.exp(sigma * Z99)
            if p50 > 0 and p99 > ratio * p50 and p99 - p50 > min_extra_ms:
                out.append(f"{kind} {k} at batch {b}: p99 {p99:.3g} ms = {p99 / p50:.1f}x p50")
                break
    return out
