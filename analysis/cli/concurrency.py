"""``offramp concurrency STUDY.yaml --clients 1-64:x2``: the study served by N closed-loop
clients for each N, as perf_analyzer measures a server: throughput and p50/p90/p95/p99 latency
against concurrency, in a table (and with ``-o`` a CSV, a plot and a page).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from offramp.analysis.cli.options import add_set_arg, number, user_help

OUTPUTS = ("concurrency.csv", "concurrency.json", "concurrency.png", "report.html")


def run(args: argparse.Namespace) -> int:
    from offramp.analysis.report.concurrency_page import COLUMNS
    from offramp.analysis.studies.concurrency import concurrency_sweep, parse_clients
    from offramp.analysis.study.config import naming_study
    from offramp.analysis.study.overrides import study_with_sets
    from offramp.common.outputs import check_output_dir

    clients = parse_clients(args.clients)
    if args.output is not None:
        check_output_dir(args.output, OUTPUTS, "concurrency folder")
    cfg, named = study_with_sets(args.config, args.set)
    with naming_study(named):
        frame = concurrency_sweep(cfg, Path(args.config).parent, clients, args.think_ms)
    if args.output is not None:
        _write(Path(args.output), frame, args, cfg.slo.latency_ms)
    if args.json:
        print(frame.to_json(orient="records", indent=1))
        return 0
    table = Table(title=f"{args.config}: closed loop, think {args.think_ms:g} ms "
                  f"({cfg.run.replications} replications × {cfg.run.requests} requests)")
    for _, head, _ in COLUMNS:
        table.add_column(head, justify="right")
    for _, r in frame.iterrows():
        table.add_row(*(f"{r[c]:.{d}g}" if d else str(int(r[c])) for c, _, d in COLUMNS))
    Console(width=None if Console().is_terminal else 160).print(table)
    if args.output is not None:
        print(f"wrote {args.output}/concurrency.csv, concurrency.png and report.html")
    return 0


def _write(folder: Path, frame, args: argparse.Namespace, slo_ms: float | None) -> None:
    from offramp.analysis.report.concurrency_page import concurrency_report, plot_concurrency
    from offramp.common.machine import command_line
    from offramp.common.outputs import output_dir

    doc = {"study": str(args.config), "command": command_line(), "think_ms": args.think_ms,
           "rows": json.loads(frame.to_json(orient="records"))}
    with output_dir(folder, OUTPUTS, "concurrency folder") as tmp:
        frame.to_csv(tmp / "concurrency.csv", index=False)
        (tmp / "concurrency.json").write_text(json.dumps(doc, indent=1) + "\n")
        plot_concurrency(frame, tmp / "concurrency.png", slo_ms)
        (tmp / "report.html").write_text(concurrency_report(tmp, doc), encoding="utf-8")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("concurrency", help="latency and throughput against the number of "
                       "closed-loop clients (perf_analyzer's view)", description=user_help(__doc__))
    p.add_argument("config", help="study YAML (its workload is replaced by N clients)")
    p.add_argument("--clients", default="1-64:x2", help="client counts: N,M,... or A-B or "
                   "A-B:STEP or A-B:xFACTOR (default 1-64:x2)")
    p.add_argument("--think-ms", type=number(0, low_open=False), default=0.0,
                   help="each client's pause between a response and its next request")
    add_set_arg(p, "change a field of the study (repeatable)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("-o", "--output", default=None, help="also write concurrency.csv, "
                   "concurrency.json, concurrency.png and report.html to this folder")
    p.set_defaults(func=run)
