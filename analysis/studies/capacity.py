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
from offramp.sim.config import RunConfig
from offramp.sim.metrics import measured_mask
from offramp.sim.runner import simulate
from offramp.sim.scenario import Scenario
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
    _check_slo(slo_ms, attainment, statistic)
    cfg, scenario = open_loop_scenario(cfg, base)
    return search_capacity(scenario, cfg.run, slo_ms, attainment, statistic, rel_tol,
                           max_replications, progress)


def open_loop_scenario(cfg: StudyConfig, base: Path | None, policy: Any = None
                       ) -> tuple[StudyConfig, Scenario]:
    """(the study with its paths resolved, its scenario): the policy fitted once, on val (or
    ``policy``, already fitted); one error for a closed loop, which has no rate to search."""
    cfg = resolve_workload(cfg, base)
    if not isinstance(workload_from(cfg.workload), OpenLoop):
        raise InputError("capacity", "workload.kind", "a closed loop has no arrival rate to "
                         "search", "use an open-loop workload (poisson, gamma, replay, mmpp, "
                         "diurnal)")
    return cfg, build_scenario(cfg, load_study_trace(cfg, base), base, policy)


def capacity_explained(cfg: StudyConfig, base: Path | None, slo_ms: float,
                       attainment: float = 0.99, statistic: str = "attainment",
                       rel_tol: float = 0.01, max_replications: int | None = None,
                       progress: Callable[[Probe], None] | None = None, policy: Any = None
                       ) -> tuple[CapacityResult, dict[str, Any]]:
    """:func:`find_capacity` and :func:`scenario_at_capacity` on one scenario (the policy
    fitted once): the capacity and what the study does there."""
    _check_slo(slo_ms, attainment, statistic)
    cfg, scenario = open_loop_scenario(cfg, base, policy)
    res = search_capacity(scenario, cfg.run, slo_ms, attainment, statistic, rel_tol,
                          max_replications, progress)
    return res, scenario_at_capacity(scenario, cfg.run, res)


def search_capacity(scenario: Scenario, run: RunConfig, slo_ms: float, attainment: float = 0.99,
                    statistic: str = "attainment", rel_tol: float = 0.01,
                    max_replications: int | None = None,
                    progress: Callable[[Probe], None] | None = None,
                    start_rps: float | None = None, step: float = 2.0) -> CapacityResult:
    """The capacity of a built scenario (an open-loop workload) under the SLO: bracket from
    ``start_rps`` (default: the workload's own rate) by factors of ``step``, then bisect to
    ``rel_tol`` (a start near the answer, e.g. a shorter search's, takes a smaller step)."""
    _check_slo(slo_ms, attainment, statistic)
    reps0 = run.replications
    prober = _Prober(scenario, run, slo_ms, attainment, statistic,
                     max_replications or max(reps0, 4 * reps0), progress)
    # Each workload kind knows its mean rate and how to run at another (sim/workload.py).
    open_loop = scenario.workload
    start = start_rps or float(getattr(open_loop.config, open_loop.SCALES)) * open_loop.unit_rate()
    lo, hi = _bracket(prober, start, step)
    while (hi - lo) > rel_tol * lo:
        mid = 0.5 * (lo + hi)
        if prober(mid).holds:
            lo = mid
        else:
            hi = mid
    slo = {"latency_ms": slo_ms, "statistic": statistic,
           "attainment": attainment if statistic == "attainment" else None}
    return CapacityResult(lo, hi, prober.probes, slo)


def holds_at(scenario: Scenario, run: RunConfig, rate_rps: float, slo_ms: float,
             attainment: float = 0.99, statistic: str = "attainment",
             max_replications: int | None = None) -> Probe:
    """One probe: whether the SLO holds at ``rate_rps`` (replications doubled while unsure)."""
    _check_slo(slo_ms, attainment, statistic)
    reps0 = run.replications
    return _Prober(scenario, run, slo_ms, attainment, statistic,
                   max_replications or max(reps0, 4 * reps0), None)(rate_rps)


def _check_slo(slo_ms: float, attainment: float, statistic: str) -> None:
    if statistic not in ("attainment", "mean"):
        raise InputError("capacity", "statistic", f"{statistic!r} is not attainment or mean",
                         "use --slo-p99-ms (with --attainment) or --slo-mean-ms")
    if not slo_ms > 0 or not math.isfinite(slo_ms):
        raise InputError("capacity", "slo_ms", f"must be a finite number > 0, got {slo_ms}",
                         "e.g. --slo-p99-ms 20")
    if not 0 < attainment < 1:
        raise InputError("capacity", "--attainment", f"must be in (0, 1), got {attainment}",
                         "e.g. 0.99 for p99")


@dataclasses.dataclass
class _Prober:
    """Probes one rate: the SLO statistic over replications (all sharing the base seed's random
    numbers), doubled until its confidence interval excludes the target or the cap is met."""

    scenario: Any
    run: Any
    slo_ms: float
    attainment: float
    statistic: str
    max_reps: int
    progress: Callable[[Probe], None] | None
    probes: list[Probe] = dataclasses.field(default_factory=list)
    cache: dict[float, Probe] = dataclasses.field(default_factory=dict)

    @property
    def slo_field(self) -> str:
        """The option that gives this bound (or its study field, slo.latency_ms)."""
        return "--slo-p99-ms / slo.latency_ms" if self.statistic == "attainment" else \
            "--slo-mean-ms"

    def describe(self) -> str:
        """The SLO in words: ``p99 <= 25 ms``."""
        return (f"p{100 * self.attainment:g} <= {self.slo_ms:g} ms"
                if self.statistic == "attainment" else f"mean latency <= {self.slo_ms:g} ms")

    def __call__(self, rate: float) -> Probe:
        if rate in self.cache:
            return self.cache[rate]
        if len(self.probes) >= MAX_PROBES:
            top = max(p.rate_rps for p in self.probes)
            raise InputError("capacity", self.slo_field, f"{self.describe()} still holds at "
                             f"{top:.3g} req/s after {MAX_PROBES} probes", "tighten the bound, "
                             "or check the study (a rate-independent latency?)")
        sc = dataclasses.replace(self.scenario, workload=self.scenario.workload.at_rate(rate))
        reps = self.run.replications
        attain = self.statistic == "attainment"
        while True:
            run = self.run.model_copy(update={"replications": reps})
            records = simulate(sc, run, breakdown=False).records
            values = _statistic(records, run.warmup_fraction, self.slo_ms, self.statistic)
            mean, ci = float(values.mean()), _ci(values)
            certain = abs(mean - (self.attainment if attain else self.slo_ms)) > ci
            if certain or reps >= self.max_reps:
                break
            reps = min(2 * reps, self.max_reps)
        holds = mean >= self.attainment if attain else mean <= self.slo_ms
        p = Probe(rate, mean, ci, bool(holds), reps, bool(certain))
        self.probes.append(p)
        self.cache[rate] = p
        if self.progress is not None:
            self.progress(p)
        return p


def _bracket(probe: _Prober, start: float, step: float = 2.0) -> tuple[float, float]:
    """(lo, hi): a rate where the SLO holds and one where it fails, multiplying or dividing
    ``start`` by ``step``."""
    rate = start
    lo = hi = None
    if probe(rate).holds:
        lo = rate
        while hi is None:
            rate *= step
            if probe(rate).holds:
                lo = rate
            else:
                hi = rate
    else:
        hi = rate
        while lo is None:
            rate /= step
            if rate < 1e-6 * start:
                raise InputError("capacity", probe.slo_field, f"{probe.describe()} does not "
                                 f"hold even at {rate:.3g} req/s", "raise the bound (a latency "
                                 "the study can reach at low load)")
            if probe(rate).holds:
                lo = rate
            else:
                hi = rate
    return lo, hi


def probe_requests(run: RunConfig, rate_rps: float) -> int:
    """Requests one replication of a probe at ``rate_rps`` simulates."""
    if run.requests:
        return int(run.requests)
    return int(rate_rps * run.duration_s) if run.duration_s else 100_000


def simulated_requests(result: CapacityResult, run: RunConfig) -> int:
    """Requests a capacity search simulated, over all its probes and replications."""
    return sum(p.replications * probe_requests(run, p.rate_rps) for p in result.probes)


def scenario_at_capacity(scenario: Scenario, run: RunConfig, result: CapacityResult
                         ) -> dict[str, Any]:
    """What the study does at its capacity (one run of the study's ``run`` there): p50 and p99
    latency, accuracy, exit fractions, batch size, busy fraction, the fitted policy — so a
    capacity explains itself."""
    trace = scenario.trace
    sc = dataclasses.replace(scenario, workload=scenario.workload.at_rate(result.capacity_rps),
                             slo_ms=result.slo.get("latency_ms"))
    summary = simulate(sc, run).summary
    mean = {k: v["mean"] for k, v in summary.items()}
    return {"rate_rps": result.capacity_rps, "latency_p50_ms": mean["latency_p50_ms"],
            "latency_p99_ms": mean["latency_p99_ms"], "accuracy": mean["accuracy"],
            "full_model_accuracy": mean["full_model_accuracy"],
            "exit_fractions": [mean[f"exit_fraction_{k}"] for k in range(trace.n_exits)],
            "batch_size_stage_0": mean["batch_size_stage_0"], "utilisation": mean["utilisation"],
            "policy": scenario.policy.get_params()}
