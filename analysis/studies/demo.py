"""The demo study: every shipped model with a shipped profile, policies × exit modes at one
load, and a load sweep (the what-if capacity study a user starts from)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from offramp.analysis.studies.compare import HEADLINE, full_batch_capacity_rps, run_grid
from offramp.analysis.study.config import StudyConfig, parse_config

POLICIES = [
    {"name": "none"},
    {"name": "maxprob", "tolerance_pct": 99},
    {"name": "entropy", "tolerance_pct": 99},
    {"name": "oracle"},
]
SWEEP_LOADS = [0.2, 0.4, 0.6, 0.8, 0.95, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0]


def demo_pairs() -> list[tuple[str, str]]:
    """(trace name, profile name) of every shipped model that has a shipped profile."""
    from offramp.profiling.shipped import list_shipped as profiles
    from offramp.traces.shipped import list_shipped as traces

    names = [t["name"] if isinstance(t, dict) else t for t in traces()]
    have = profiles()
    pairs = []
    for name in names:
        matching = sorted(p for p in have if p.startswith(name + "-"))
        if matching:
            pairs.append((name, matching[0]))
    return pairs


MODES = ("keep", "shrink")  # the exit modes of the policy table (``offramp demo --modes``)


def variants(cfg_rate: float, exit_modes: tuple[str, ...] = MODES):
    for pol in POLICIES:
        modes = ["none"] if pol["name"] == "none" else exit_modes
        for mode in modes:
            yield {"policy": pol,
                   "server": {"exit_mode": mode}, "workload": {"rate_rps": cfg_rate}}


def sweep(capacity: float):
    for mode, pol in (("none", POLICIES[0]), ("shrink", POLICIES[2]), ("keep", POLICIES[2])):
        for load in SWEEP_LOADS:
            yield {"policy": pol,
                   "server": {"exit_mode": mode}, "workload": {"rate_rps": load * capacity}}


TABLE_LOAD = 0.6  # the policy table's load: this fraction of the no-exit capacity
# A tight SLO, so the policies differ in attainment at the table's load: this fraction of the
# no-exit server's p99 there (that server misses it; the table shows which exits recover it).
SLO_OF_NO_EXIT_P99 = 0.9


def demo_study(trace_name: str, profile_name: str, max_batch: int, requests: int,
               replications: int, seed: int) -> tuple[StudyConfig, float, float]:
    """The base study of one model: (config, no-exit capacity req/s, SLO ms).

    Batches wait up to a quarter of a full batch's time; the SLO is :data:`SLO_OF_NO_EXIT_P99`
    of the no-exit server's p99 at :data:`TABLE_LOAD` of its capacity.
    """
    from offramp.analysis.study.resolve import load_study_trace

    base = parse_config({
        "trace": {"path": trace_name}, "profile": {"path": profile_name},
        "server": {"max_batch": max_batch, "max_wait_ms": 0.0},
        "run": {"requests": requests, "replications": replications, "seed": seed},
    }, "demo")
    cap = full_batch_capacity_rps(base, load_study_trace(base))
    full_ms = 1000 * max_batch / cap
    base = base.model_copy(update={
        "server": base.server.model_copy(update={"max_wait_ms": round(full_ms / 4, 3)})})
    no_exit = run_grid(base, [next(variants(TABLE_LOAD * cap))])
    slo = round(SLO_OF_NO_EXIT_P99 * float(no_exit["latency_p99_ms"].iloc[0]), 2)
    return base.model_copy(update={"slo": base.slo.model_copy(update={"latency_ms": slo})}), \
        cap, slo


DEMO_OUTPUTS = ("*-policies.csv", "*-load-sweep.csv", "*-load-sweep.png", "*-capacity.csv",
                "*-breakdown.png", "report.html")
CAPACITY_VARIANTS = (("none", POLICIES[0]), ("keep", POLICIES[2]), ("shrink", POLICIES[2]))


def jobs_per_model(modes: tuple[str, ...] = MODES) -> int:
    """Simulated studies and capacity searches per model (for a progress bar)."""
    return (sum(1 for _ in variants(1.0, modes)) + sum(1 for _ in sweep(1.0))
            + len(CAPACITY_VARIANTS))


def capacities(base: StudyConfig, start_rps: float, slo_ms: float, requests: int,
               progress: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """The highest load within the SLO (99% of requests) for no exits and entropy τ=99 with
    keep and shrink, by the capacity search (:mod:`.capacity`; probes of up to 10,000
    requests x 2 replications)."""
    from offramp.analysis.studies.capacity import find_capacity

    rows = []
    run = base.run.model_copy(update={"requests": min(requests, 10_000), "replications": 2})
    for mode, pol in CAPACITY_VARIANTS:
        data = base.model_dump(mode="json", exclude_unset=True)
        data.update(policy=pol, run=run.model_dump(mode="json", exclude_unset=True))
        data["server"] = {**data.get("server", {}), "exit_mode": mode}
        data["workload"] = {"kind": "poisson", "rate_rps": start_rps}
        res = find_capacity(parse_config(data, "demo"), None, slo_ms, 0.99, rel_tol=0.02)
        rows.append({"policy": pol["name"], "exit_mode": mode, "capacity_rps": res.capacity_rps,
                     "plus_minus_rps": res.plus_minus_rps, "probes": len(res.probes)})
        if progress is not None:
            progress()
    return rows


def run_demo_model(trace_name: str, profile_name: str, out: Path, max_batch: int, requests: int,
                   replications: int, seed: int, progress: Callable[[], None] | None = None,
                   modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    """Run one model's demo, write its CSVs and plot under ``out``, return the results."""
    from offramp.analysis.report.breakdown import plot_breakdown
    from offramp.analysis.report.plots import plot_sweep
    from offramp.sim.metrics import BREAKDOWN

    base, cap, slo = demo_study(trace_name, profile_name, max_batch, requests, replications, seed)
    import pandas as pd

    table = run_grid(base, variants(TABLE_LOAD * cap, modes), progress=progress,
                     metrics=[*HEADLINE, "latency_mean_ms", *BREAKDOWN])
    table.insert(0, "label", [f"{r.policy} {r.policy_fit} / {r.exit_mode}".replace("  ", " ")
                              for r in table.itertuples()])
    curve = run_grid(base, sweep(cap), progress=progress)
    caps = pd.DataFrame(capacities(base, TABLE_LOAD * cap, slo, requests, progress))
    table.to_csv(out / f"{trace_name}-policies.csv", index=False)
    curve.to_csv(out / f"{trace_name}-load-sweep.csv", index=False)
    caps.to_csv(out / f"{trace_name}-capacity.csv", index=False)
    plot_sweep(curve, trace_name, slo, out / f"{trace_name}-load-sweep.png")
    plot_breakdown(table, f"{trace_name} at {TABLE_LOAD * cap:.0f} req/s: where a request's time "
                   "goes", out / f"{trace_name}-breakdown.png")
    from offramp.analysis.study.resolve import load_study_profile, load_study_trace, study_costs
    from offramp.profiling.latency import describe_costs

    costs = describe_costs(study_costs(base, load_study_profile(base, load_study_trace(base))))
    return {"profile": profile_name, "capacity_no_exit_rps": cap, "slo_ms": slo,
            "stage_costs": costs, "policies": table, "sweep": curve, "capacity": caps}
