"""``offramp demo``: the main job on the shipped data, no GPU and no download needed.

For every shipped model with a shipped latency profile: compare exit policies and exit modes at
one load (a table), and sweep the load to show p99 latency and accuracy against throughput
(a plot) — the what-if capacity study a user starts from.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from offramp.traces.errors import InputError

from .compare import full_batch_capacity_rps, run_grid
from .config import parse_config

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


def variants(cfg_rate: float):
    for pol in POLICIES:
        modes = ["none"] if pol["name"] == "none" else ["keep", "shrink"]
        for mode in modes:
            yield {"policy": pol,
                   "server": {"exit_mode": mode}, "workload": {"rate_rps": cfg_rate}}


def sweep(capacity: float):
    for mode, pol in (("none", POLICIES[0]), ("shrink", POLICIES[2]), ("keep", POLICIES[2])):
        for load in SWEEP_LOADS:
            yield {"policy": pol,
                   "server": {"exit_mode": mode}, "workload": {"rate_rps": load * capacity}}


def _table(frame, title: str) -> Table:
    table = Table(title=title)
    for col in ("policy", "fit", "exit mode", "throughput req/s", "p50 ms", "p99 ms", "accuracy",
                "agreement", "SLO met"):
        table.add_column(col, justify="left" if col in ("policy", "fit", "exit mode") else "right")
    for _, r in frame.iterrows():
        table.add_row(r["policy"], r["policy_fit"], r["exit_mode"], f"{r['throughput_rps']:.0f}",
                      f"{r['latency_p50_ms']:.2f} ± {r['latency_p50_ms_ci95']:.2f}",
                      f"{r['latency_p99_ms']:.2f} ± {r['latency_p99_ms_ci95']:.2f}",
                      f"{r['accuracy']:.4f}", f"{r['agreement']:.4f}", f"{r['slo_attainment']:.3f}")
    return table


def plot_sweep(frame, model: str, slo_ms: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_png

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for (pol, fit, mode), grp in frame.groupby(["policy", "policy_fit", "exit_mode"], sort=False):
        label = f"{pol} {fit} / {mode} (accuracy {grp['accuracy'].mean():.3f})".replace("  ", " ")
        ax1.plot(grp["throughput_rps"], grp["latency_p99_ms"], marker="o", ms=4, label=label)
        ax2.plot(grp["rate_rps"], grp["latency_p50_ms"], marker="o", ms=4, label=label)
    for ax in (ax1, ax2):
        ax.axhline(slo_ms, color="k", ls="--", lw=1, label=f"SLO {slo_ms:g} ms")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    ax1.set_xlabel("achieved throughput (req/s)")
    ax1.set_ylabel("p99 latency (ms)")
    ax1.set_title(f"{model}: p99 latency vs throughput")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("offered load (req/s)")
    ax2.set_ylabel("p50 latency (ms)")
    ax2.set_title("p50 latency vs offered load")
    fig.tight_layout()
    save_png(fig, path)


def run(args: argparse.Namespace) -> int:
    pairs = demo_pairs()
    if not pairs:
        raise InputError("offramp package", "traces/data, profiling/data",
                         "no shipped trace with a shipped profile was found",
                         "reinstall offramp from a full checkout")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(width=None if Console().is_terminal else 160)
    results = {}
    n_jobs = len(pairs) * (sum(1 for _ in variants(1.0)) + sum(1 for _ in sweep(1.0)))
    with Progress(TextColumn("demo"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), disable=args.json) as bar:
        task = bar.add_task("demo", total=n_jobs)
        for trace_name, profile_name in pairs:
            base = parse_config({
                "trace": {"path": trace_name}, "profile": {"path": profile_name},
                "server": {"max_batch": args.max_batch, "max_wait_ms": 0.0},
                "run": {"requests": args.requests, "replications": args.replications,
                        "seed": args.seed},
            }, "demo")
            from .resolve import load_study_trace

            trace = load_study_trace(base)
            cap = full_batch_capacity_rps(base, trace)
            # Wait up to a quarter of a full batch's time; SLO = 3x a full batch's time.
            full_ms = 1000 * args.max_batch / cap
            slo = round(3 * full_ms, 2)
            base = base.model_copy(update={
                "server": base.server.model_copy(update={"max_wait_ms": round(full_ms / 4, 3)}),
                "slo": base.slo.model_copy(update={"latency_ms": slo})})
            step = lambda: bar.advance(task)  # noqa: E731
            table = run_grid(base, variants(0.6 * cap), progress=step)
            curve = run_grid(base, sweep(cap), progress=step)
            table.to_csv(out / f"{trace_name}-policies.csv", index=False)
            curve.to_csv(out / f"{trace_name}-load-sweep.csv", index=False)
            plot_sweep(curve, trace_name, slo, out / f"{trace_name}-load-sweep.png")
            results[trace_name] = {"profile": profile_name, "capacity_no_exit_rps": cap,
                                   "slo_ms": slo, "policies": table, "sweep": curve}
    if args.json:
        print(json.dumps({name: {"profile": r["profile"], "capacity_no_exit_rps": r["capacity_no_exit_rps"],
                                 "slo_ms": r["slo_ms"],
                                 "policies": json.loads(r["policies"].to_json(orient="records")),
                                 "sweep": json.loads(r["sweep"].to_json(orient="records"))}
                          for name, r in results.items()}, indent=1))
        return 0
    for name, r in results.items():
        title = (f"{name} on {r['profile']} · load 60% of no-exit capacity "
                 f"({0.6 * r['capacity_no_exit_rps']:.0f} req/s) · max_batch {args.max_batch} · "
                 f"SLO {r['slo_ms']} ms · {args.replications} replications × {args.requests} requests")
        console.print(_table(r["policies"], title))
        best = r["sweep"].copy()
        ok = best[best["slo_attainment"] >= 0.99]
        for (pol, mode), grp in ok.groupby(["policy", "exit_mode"], sort=False):
            console.print(f"  {pol}/{mode}: highest swept load with 99% of requests within SLO: "
                          f"{grp['rate_rps'].max():.0f} req/s")
    console.print(f"wrote tables and plots to {out}/")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="compare exit policies on the shipped models (no GPU needed)",
                       description=__doc__)
    p.add_argument("-o", "--output", default="offramp-demo", help="folder for tables and plots")
    p.add_argument("--requests", type=int, default=20_000, help="requests per replication")
    p.add_argument("--replications", type=int, default=3)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print all results as JSON")
    p.set_defaults(func=run)
