"""``offramp sweep STUDY.yaml --grid GRID.yaml -o OUT/``: the study at every point of a grid of
config fields, on a local process pool (``--workers``), a Dask ``LocalCluster``
(``--dask-local N``) or an existing Dask cluster (``--scheduler``). Resumable: a re-run skips
finished points. Prints the best points; every point goes to OUT/sweep.parquet.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from offramp.analysis.cli.options import (
    add_executor_args,
    add_set_arg,
    executor_for,
    number,
    user_help,
)
from offramp.traces.progress import rich_progress


def run(args: argparse.Namespace) -> int:
    from offramp.analysis.studies.sweep import check_sweep, run_sweep

    check_sweep(args.config, args.grid, args.output, args.set)  # before any worker starts
    console = Console(stderr=True)
    with executor_for(args) as (executor, where), rich_progress(
            console=console, disable=args.quiet or not console.is_terminal) as bar:
        task = bar.add_task("sweep points", total=None)
        if not args.quiet:
            console.print(f"running on a {where}")
        frame = run_sweep(args.config, args.grid, args.output, executor,
                          progress=lambda done, total: bar.update(task, completed=done,
                                                                  total=total), sets=args.set,
                          cost_per_replica_hour=args.cost_per_replica_hour)
    _print_best(frame)
    print(f"wrote {args.output}/sweep.parquet ({len(frame)} points) and one result file per "
          f"point in {args.output}/points/; its page: offramp report {args.output}")
    return 0


def _print_best(frame) -> None:
    from rich.table import Table

    from offramp.analysis.report.sweep_view import best_points

    best = best_points(frame)
    table = Table(title=f"best of {len(frame)} points (lowest p99"
                  f"{', SLO met first' if 'slo_attainment' in frame else ''})")
    for col in best.columns:
        table.add_column(col, justify="left" if col == "point" else "right")
    for row in best.itertuples(index=False):
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    Console(width=None if Console().is_terminal else 160).print(table)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a study at every point of a grid of config fields",
                       description=user_help(__doc__))
    p.add_argument("config", help="the base study YAML")
    p.add_argument("--grid", required=True, help="grid YAML: grid: {section.field: [values]} "
                   "or points: [{section.field: value}, ...]")
    p.add_argument("-o", "--output", required=True, help="sweep folder (resumable)")
    add_executor_args(p)
    add_set_arg(p, "change a field of the base study (repeatable; as in simulate)")
    p.add_argument("--cost-per-replica-hour", type=number(0), default=None,
                   help="price of a replica-hour: adds each point's cost per million requests "
                   "at its throughput (cost_per_million)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
