"""``offramp sweep STUDY.yaml --grid GRID.yaml -o OUT/``: a study at every point of a grid.

The work is :mod:`.sweep`; here the executor is chosen: a local process pool (``--workers``),
a Dask ``LocalCluster`` (``--dask-local N``) or an existing Dask cluster (``--scheduler``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor

from rich.console import Console

from offramp.analysis.cli.options import integer
from offramp.common.errors import InputError
from offramp.traces.progress import rich_progress


@contextlib.contextmanager
def executor_for(args: argparse.Namespace) -> Iterator[tuple[Executor, str]]:
    """The executor the points run on, and a line saying which."""
    if args.scheduler or args.dask_local:
        try:
            from distributed import Client, LocalCluster
        except ModuleNotFoundError:
            raise InputError("--scheduler" if args.scheduler else "--dask-local", None,
                             "needs dask.distributed", "pip install 'dask[distributed]'") from None
        if args.scheduler:
            try:
                client = Client(args.scheduler, timeout="10s")
            except OSError as exc:
                raise InputError("--scheduler", args.scheduler, f"cannot reach it ({exc})",
                                 "check the address (tcp://HOST:PORT) and that it runs") from None
            with client:
                yield client.get_executor(), f"Dask cluster {args.scheduler}"
            return
        with LocalCluster(n_workers=args.dask_local, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield client.get_executor(), f"Dask LocalCluster, {args.dask_local} workers"
        return
    workers = args.workers or max(1, (os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield pool, f"process pool, {workers} workers"


def run(args: argparse.Namespace) -> int:
    from offramp.analysis.studies.sweep import check_sweep, run_sweep

    if args.scheduler and args.dask_local:
        raise InputError("--scheduler", None, "given with --dask-local", "give one of them")
    check_sweep(args.config, args.grid, args.output, args.set)  # before any worker starts
    console = Console(stderr=True)
    with executor_for(args) as (executor, where), rich_progress(
            console=console, disable=args.quiet or not console.is_terminal) as bar:
        task = bar.add_task("sweep points", total=None)
        if not args.quiet:
            console.print(f"running on a {where}")
        frame = run_sweep(args.config, args.grid, args.output, executor,
                          progress=lambda done, total: bar.update(task, completed=done,
                                                                  total=total), sets=args.set)
    print(f"wrote {args.output}/sweep.parquet ({len(frame)} points) and one result file per "
          f"point in {args.output}/points/")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a study at every point of a grid of config fields",
                       description=__doc__)
    p.add_argument("config", help="the base study YAML")
    p.add_argument("--grid", required=True, help="grid YAML: grid: {section.field: [values]} "
                   "or points: [{section.field: value}, ...]")
    p.add_argument("-o", "--output", required=True, help="sweep folder (resumable)")
    p.add_argument("--workers", type=integer(1), default=None,
                   help="local process pool size (default: the CPU count)")
    p.add_argument("--dask-local", type=integer(1), default=None, metavar="N",
                   help="run on a Dask LocalCluster of N worker processes")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run on an existing Dask distributed cluster")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="change a field of the base study (repeatable; as in simulate)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
