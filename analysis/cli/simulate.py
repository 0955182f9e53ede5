"""``offramp simulate STUDY.yaml -o OUT/``: run one study and write its run folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from offramp.analysis.cli.options import add_set_arg
from offramp.common.errors import InputError


def run(args: argparse.Namespace) -> int:
    from offramp.analysis.study.config import naming_study
    from offramp.analysis.study.overrides import study_with_sets
    from offramp.analysis.study.run import RUN_OUTPUTS, run_study, summary_doc, write_run
    from offramp.common.outputs import check_output_dir, check_output_file

    check_output_dir(args.output, RUN_OUTPUTS, "run folder")
    if args.save_arrivals:
        arrivals, run_dir = Path(args.save_arrivals).resolve(), Path(args.output).resolve()
        if arrivals == run_dir or run_dir in arrivals.parents:
            raise InputError("--save-arrivals", args.save_arrivals, "is inside the run folder, "
                             "which is written whole", "save the arrivals beside it")
        check_output_file(args.save_arrivals, "arrivals file")
    cfg, named = study_with_sets(args.config, args.set)
    base = Path(args.config).parent
    console = Console(stderr=True)
    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("replications"), TimeElapsedColumn(), console=console,
                  disable=args.json or not console.is_terminal) as bar:
        task = bar.add_task("sim", total=cfg.run.replications)
        with naming_study(named):
            out = run_study(cfg, base, progress=lambda i: bar.update(task, completed=i))
    dest = write_run(out, Path(args.output))
    if args.save_arrivals:
        from offramp.sim.workload import save_arrivals

        first = out.result.records[0]
        save_arrivals(args.save_arrivals, first.arrival, first.sample)
        Console(stderr=True).print(f"wrote {args.save_arrivals} (replication 1's arrivals; "
                                   "replay with workload: {kind: replay, path: ...})")
    doc = summary_doc(out)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        from offramp.analysis.report.tables import costs_line, print_summary

        title = (f"{out.trace.model_id} · {cfg.policy.name} · {cfg.server.exit_mode} · "
                 f"{len(out.result.runs)} replications ({out.result.engine} engine)")
        print_summary(out.result.summary, title,
                      Console(width=None if Console().is_terminal else 120),
                      device=(out.costs or {}).get("device"))
        Console().print(costs_line(out.costs))
        if args.breakdown:
            import pandas as pd

            from offramp.analysis.report.breakdown import breakdown_table, summary_row

            frame = pd.DataFrame([summary_row(out.result.summary, f"{cfg.policy.name} / "
                                              f"{cfg.server.exit_mode}")])
            Console(width=None if Console().is_terminal else 160).print(breakdown_table(
                frame, "where a request's time goes (ms; the means add up to the mean latency)"))
        Console().print(f"wrote {dest}/ (config.resolved.yaml, requests.parquet, summary.json, "
                        "latency.png)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulate a serving study from a YAML config",
                       description="Simulate a serving study and write a run folder: "
                       "config.resolved.yaml, requests.parquet, summary.json, latency.png.")
    p.add_argument("config", help="study YAML (see examples/)")
    p.add_argument("-o", "--output", required=True, help="run folder to write")
    add_set_arg(p, "override a config field (repeatable)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--breakdown", action="store_true", help="also print where the time goes: "
                   "queueing, in service, and each stage kind (p50, p99, mean)")
    p.add_argument("--save-arrivals", metavar="FILE",
                   help="also write replication 1's arrivals and sample ids (CSV, or Parquet "
                   "by suffix) for a `workload: {kind: replay}` study")
    p.set_defaults(func=run)
