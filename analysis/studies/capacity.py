"""Capacity search: the highest arrival rate at which a study still meets its latency SLO.

The study's policy is fitted once; each probe simulates the same scenario at another rate
with the same seeds (common random numbers: a Poisson or Gamma stream at rate r is the same
standard draws scaled by 1/r, so probes differ only by the rate). The SLO holds at a rate
when, averaged over the replications, a fraction ``attainment`` of the measured requests
finish within ``slo_ms`` (``attainment`` 0.99: p99 <= slo_ms), or, with ``statistic="mean"``,
when the mean latency is within ``slo_ms``. A probe whose 95% confidence interval straddles
the target runs again with twice the replications (the first ones reused) up to
``max_replications``; the search brackets the capacity by doubling or halving the rate, then
bisects until the bracket is within ``rel_tol`` of its lower end.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from offramp.analysis.study.config import StudyConfig
from offramp.analysis.study.resolve import build_scenario, load_study_trace, resolve_workload
from offramp.common.errors import InputError
from offramp.sim.metrics import measured_mask
from offramp.sim.runner import simulate
from offramp.sim.workload import OpenLoop, workload_from

MAX_PROBES = 40


@dataclass(frozen=True)
class Probe:
    """One simulated rate: the statistic's mean and 95% CI half-width over replications."""

    rate_rps: float
    value: float
    ci95: float
    holds: bool
    replications: int
    certain: bool  # the CI is on one side of the target


@dataclass
class CapacityResult:
    """The highest rate that held (``capacity_rps``) and the lowest that failed above it."""

    capacity_rps: float
    failed_rps: float
    probes: list[Probe] = field(default_factory=list)
    slo: dict[str, Any] = field(default_factory=dict)

    @property
    def plus_minus_rps(self) -> float:
        """Half the final bracket: the capacity lies in [capacity, failed]."""
        return (self.failed_rps - self.capacity_rps) / 2.0

    def as_dict(self) -> dict[str, Any]:
        return {"capacity_rps": self.capacity_rps, "failed_rps": self.failed_rps,
                "plus_minus_rps": self.plus_minus_rps, "slo": self.slo,
                "probes": [dataclasses.asdict(p) for p in self.probes]}


def _statistic(records: list, warmup: float, slo_ms: float, statistic: str) -> np.ndarray:
    out = []
    for rec in records:
        keep = measured_mask(rec, warmup)
        lat = (rec.finish[keep] - rec.arrival[keep]) * 1000.0
        out.append(float(np.mean(lat <= slo_ms)) if statistic == "attainment"
                   else float(np.mean(lat)))
    return np.array(out)


def _ci(values: np.ndarray) -> float:
    if values.size < 2:
        return math.inf
    return float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))


def find_capacity(cfg: StudyConfig, base: Path | None, slo_ms: float, attainment: float = 0.99,
                  statistic: str = "attainment", rel_tol: float = 0.01,
                  max_replications: int | None = None,
                  progress: Callable[[Probe], None] | None = None) -> CapacityResult:
    """The study's capacity under the SLO (see the module docstring)."""
    if statistic not in ("attainment", "mean"):
        raise InputError("capacity", "statistic", f"{statistic!r} is not attainment or mean",
                         "use --slo-p99-ms (with --attainment) or --slo-mean-ms")
    if not slo_ms > 0 or not math.isfinite(slo_ms):
        raise InputError("capacity", "slo_ms", f"must be a finite number > 0, got {slo_ms}",
                         "e.g. --slo-p99-ms 20")
    if not 0 < attainment < 1:
        raise InputError("capacity", "--attainment", f"must be in (0, 1), got {attainment}",
                         "e.g. 0.99 for p99")
    cfg = resolve_workload(cfg, base)
    if not isinstance(workload_from(cfg.workload), OpenLoop):
        raise InputError("capacity", "workload.kind", "a closed loop has no arrival rate to "
                         "search", "use an open-loop workload (poisson, gamma, replay, mmpp, "
                         "diurnal)")
    trace = load_study_trace(cfg, base)
    scenario = build_scenario(cfg, trace, base)  # the policy is fitted once, on val
    reps0 = cfg.run.replications
    max_reps = max_replications or max(reps0, 4 * reps0)
    # Each workload kind knows its mean rate and how to run at another (sim/workload.py).
    open_loop = scenario.workload
    start, unit = float(getattr(open_loop.config, open_loop.SCALES)), open_loop.unit_rate()
    probes: list[Probe] = []
    cache: dict[float, Probe] = {}

    def probe(rate: float) -> Probe:
        if rate in cache:
            return cache[rate]
        if len(probes) >= MAX_PROBES:
            raise InputError("capacity", None, f"no bracket within {MAX_PROBES} probes",
                             "check the SLO: it may hold at no rate or at every rate")
        workload = open_loop.at_rate(rate)
        sc = dataclasses.replace(scenario, workload=workload)
        reps = reps0
        while True:
            run = cfg.run.model_copy(update={"replications": reps})
            values = _statistic(simulate(sc, run).records, run.warmup_fraction, slo_ms,
                                statistic)
            mean, ci = float(values.mean()), _ci(values)
            target = attainment if statistic == "attainment" else slo_ms
            certain = abs(mean - target) > ci
            if certain or reps >= max_reps:
                break
            reps = min(2 * reps, max_reps)
        holds = mean >= attainment if statistic == "attainment" else mean <= slo_ms
        p = Probe(rate, mean, ci, bool(holds), reps, bool(certain))
        probes.append(p)
        cache[rate] = p
        if progress is not None:
            progress(p)
        return p

    rate = start * unit
    lo = hi = None
    if probe(rate).holds:
        lo = rate
        while hi is None:
            rate *= 2.0
            if probe(rate).holds:
                lo = rate
            else:
                hi = rate
    else:
        hi = rate
        while lo is None:
            rate /= 2.0
            if rate < 1e-6 * start * unit:
                raise InputError("capacity", "slo", f"the SLO does not hold even at "
                                 f"{rate:.3g} req/s", "loosen the SLO or check the study")
            if probe(rate).holds:
                lo = rate
            else:
                hi = rate
    while (hi - lo) > rel_tol * lo:
        mid = 0.5 * (lo + hi)
        if probe(mid).holds:
            lo = mid
        else:
            hi = mid
    slo = {"latency_ms": slo_ms, "statistic": statistic,
           "attainment": attainment if statistic == "attainment" else None}
    return CapacityResult(lo, hi, probes, slo)
