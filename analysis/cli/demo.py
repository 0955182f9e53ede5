"""``offramp demo``: the main job on the shipped data, no GPU and no download needed.

For every shipped model with a shipped latency profile: compare exit policies and exit modes at
one load (a table), and sweep the load to show p99 latency and accuracy against throughput
(a plot), and find each variant's capacity within a tight SLO — the what-if capacity study a
user starts from. Writes CSVs, plots and one HTML page.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from offramp.analysis.cli.options import exit_modes, integer, user_help
from offramp.common.errors import InputError
from offramp.common.outputs import output_dir


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


def run(args: argparse.Namespace) -> int:
    from offramp.analysis.report.tables import costs_line
    from offramp.analysis.studies.demo import (
        DEMO_OUTPUTS,
        TABLE_LOAD,
        demo_pairs,
        jobs_per_model,
        run_demo_model,
    )

    modes = tuple(m for m in exit_modes(args.modes) if m != "none")  # none: the no-exit row
    pairs = demo_pairs()
    if not pairs:
        raise InputError("offramp package", "traces/data, profiling/data",
                         "no shipped trace with a shipped profile was found",
                         "reinstall offramp from a full checkout")
    out = Path(args.output)
    console = Console(width=None if Console().is_terminal else 160)
    results = {}
    with output_dir(out, DEMO_OUTPUTS, "demo folder") as tmp, Progress(
            TextColumn("demo"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=args.json or not Console(stderr=True).is_terminal) as bar:
        task = bar.add_task("demo", total=len(pairs) * jobs_per_model(modes))
        for trace_name, profile_name in pairs:
            results[trace_name] = run_demo_model(
                trace_name, profile_name, tmp, args.max_batch, args.requests, args.replications,
                args.seed, progress=lambda: bar.advance(task), modes=modes)
        from offramp.analysis.report.html import demo_report
        from offramp.common.machine import command_line

        (tmp / "report.html").write_text(demo_report(tmp, results, command_line()),
                                         encoding="utf-8")
    if args.json:
        print(json.dumps({name: {"profile": r["profile"], "capacity_no_exit_rps": r["capacity_no_exit_rps"],
                                 "slo_ms": r["slo_ms"], "stage_costs": r["stage_costs"],
                                 "policies": json.loads(r["policies"].to_json(orient="records")),
                                 "sweep": json.loads(r["sweep"].to_json(orient="records")),
                                 "capacity": json.loads(r["capacity"].to_json(orient="records"))}
                          for name, r in results.items()}, indent=1))
        return 0
    for name, r in results.items():
        title = (f"{name} on {r['profile']} · load 60% of no-exit capacity "
                 f"({TABLE_LOAD * r['capacity_no_exit_rps']:.0f} req/s) · max_batch {args.max_batch} · "
                 f"SLO {r['slo_ms']} ms · {args.replications} replications × {args.requests} requests")
        console.print(_table(r["policies"], title))
        console.print(f"  {costs_line(r['stage_costs'])}")
        if args.breakdown:
            from offramp.analysis.report.breakdown import breakdown_table

            console.print(breakdown_table(r["policies"], f"{name}: where a request's time goes "
                                          "(ms; the means add up to the mean latency)"))
        for _, c in r["capacity"].iterrows():
            console.print(f"  {c['policy']}/{c['exit_mode']}: capacity with 99% of requests "
                          f"within SLO: {c['capacity_rps']:.0f} ± {c['plus_minus_rps']:.0f} "
                          f"req/s ({c['probes']} probes)")
    console.print(f"wrote tables, plots and report.html to {out}/")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="compare exit policies on the shipped models (no GPU needed)",
                       description=user_help(__doc__))
    p.add_argument("-o", "--output", default="offramp-demo", help="folder for tables and plots")
    p.add_argument("--requests", type=integer(1), default=20_000, help="requests per replication")
    p.add_argument("--replications", type=integer(1), default=3)
    p.add_argument("--max-batch", type=integer(1), default=32)
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--modes", default="keep,shrink", help="exit modes of the policy table "
                   "(default keep,shrink; rebatch runs on the reference engine: slower)")
    p.add_argument("--json", action="store_true", help="print all results as JSON")
    p.add_argument("--breakdown", action="store_true", help="also print where each variant's "
                   "time goes: queueing, in service, and each stage kind")
    p.set_defaults(func=run)
