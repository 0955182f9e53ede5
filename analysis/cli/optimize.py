"""``offramp optimize STUDY.yaml --slo-p99-ms X -o OUT``: the configuration that meets a
latency SLO at the load with the accuracy and compute budget kept.

One objective: ``--maximize load`` (the capacity at the SLO, default), ``--minimize replicas
--load-rps L`` or ``--maximize accuracy --load-rps L``; constraints ``--min-relative-accuracy``
or ``--min-accuracy`` (checked on val, reported on test), ``--budget-ms`` (average compute per
sample at batch 1), ``--max-replicas``. The space: the policies' own search ranges, exit
mode, max_batch and max_wait_ms (``--space FILE`` replaces any of them; docs/optimize.md);
``--set section.field=value`` changes the study first, as in simulate.
Optuna's TPE screens candidates on short simulations with common random numbers; the best
few re-run on the study's run at several seeds; baselines (no exits at its best batching,
PAME, EENet, a grid given the same simulated requests) run beside. Writes OUT/best.yaml (a
study: simulate, capacity and validate take it), trials.parquet, optimize.json, front.png,
report.html; resumable (OUT/optuna.db).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from offramp.analysis.cli.options import (
    add_executor_args,
    add_set_arg,
    executor_for,
    integer,
    number,
    user_help,
)
from offramp.common.errors import InputError


def goal_from(args: argparse.Namespace, study_slo: float | None):
    """The goal the options ask for (the study's slo.latency_ms when no --slo-p99-ms)."""
    from offramp.analysis.optimize.goal import Goal, Objective

    if args.minimize and args.maximize:
        raise InputError("optimize", "--minimize", "given with --maximize", "give one objective")
    objective = Objective(args.minimize or args.maximize or "load")
    slo = args.slo_p99_ms if args.slo_p99_ms is not None else study_slo
    if slo is None:
        raise InputError("optimize", "--slo-p99-ms", "missing (and the study sets no "
                         "slo.latency_ms)", "e.g. --slo-p99-ms 25")
    return Goal(objective, slo, args.attainment, args.load_rps, args.min_relative_accuracy,
                args.min_accuracy, args.budget_ms, args.max_replicas,
                args.cost_per_replica_hour)


def run(args: argparse.Namespace) -> int:
    from offramp.analysis.optimize.output import rows, value_label, why, write
    from offramp.analysis.optimize.run import optimize, prepare
    from offramp.analysis.optimize.search import Settings
    from offramp.analysis.study.overrides import study_with_sets
    from offramp.common.machine import command_line
    from offramp.traces.progress import rich_progress

    goal = goal_from(args, study_with_sets(args.config, args.set)[0].slo.latency_ms)
    checkpoint = None
    if args.validate:
        from offramp.analysis.optimize.validate import check_validate
        from offramp.analysis.validation.calibrate import checked_checkpoint

        check_validate(goal)
        checkpoint = checked_checkpoint(str(args.checkpoint) if args.checkpoint else None, None)
    elif args.checkpoint is not None:
        raise InputError("--checkpoint", str(args.checkpoint), "the real model's weights are "
                         "for --validate", "add --validate, or drop --checkpoint")
    chosen = False if args.no_baselines else _baselines(args.baselines)
    if args.front and goal.objective.value == "accuracy":
        raise InputError("--front", None, "accuracy is already the objective",
                         "drop --front, or optimize the load or the replicas")
    settings = Settings(front=args.front, trials=args.trials, finalists=args.finalists,
                        seeds=args.seeds,
                        screen_requests=args.screen_requests, seed=args.seed)
    _, _, space, _, _ = prepare(args.config, goal, args.space, args.output,  # before workers
                                args.set)
    console = Console(stderr=True)
    if not args.quiet:
        console.print(f"goal: {goal.describe()}\nspace:\n  " + space.describe().replace(
            "\n", "\n  "))
    with executor_for(args) as (executor, where), rich_progress(
            console=console, disable=args.quiet or not console.is_terminal) as bar:
        if not args.quiet:
            console.print(f"running on a {where}")
        tasks: dict[str, int] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        result = optimize(args.config, goal, args.output, executor, settings, args.space,
                          baselines=chosen, progress=progress, sets=args.set)
    paths = write(result, Path(args.output), command_line())
    _print(result, rows(result), value_label(result), why(result))
    print(f"wrote {paths['best.yaml']} (the winner as a study), trials.parquet, optimize.json, "
          f"front.png and report.html in {args.output}")
    if args.validate:
        from offramp.analysis.optimize.validate import validate_choice

        doc = validate_choice(result, Path(args.output), args.device, args.validate_repeats,
                              args.validate_requests, args.core,
                              log=(lambda *_: None) if args.quiet else print,
                              checkpoint=checkpoint)
        _print_validation(doc)
    return 0


def _print_validation(doc: dict) -> None:
    table = Table(title=f"predicted vs measured capacity on this {doc['device']} "
                  f"({doc['repeats']} repeats x {doc['requests']} requests per rate)")
    for head in ("", "predicted req/s", "measured (median)", "real spread", "error", "verdict"):
        table.add_column(head, justify="left" if head in ("", "verdict") else "right")
    for r in doc["rows"]:
        lo, hi = r["measured_spread_rps"]
        table.add_row(r["label"], f"{r['predicted_rps']:.4g}", f"{r['measured_rps']:.4g}",
                      f"{lo:.4g}..{hi:.4g}", f"{r['error']:+.1%}",
                      "within" if r["within"] else "OUTSIDE")
    Console(width=140).print(table)
    if doc["ordering_agrees"] is not None:
        print("ordering " + ("agrees" if doc["ordering_agrees"] else "DISAGREES") +
              " (winner vs no exits)")


def _baselines(text: str) -> list[str]:
    from offramp.analysis.optimize.run import BASELINES

    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise InputError("--baselines", bad[0], "is not a baseline",
                         f"name some of {', '.join(BASELINES)}")
    return names


def _print(result, table_rows: list[dict], label: str, reasons: list[str]) -> None:
    table = Table(title=f"offramp optimize: {result.goal.describe()}")
    priced = any(r.get("cost_per_million") is not None for r in table_rows)
    for head in ("", "configuration", label, "±95% CI", "× no exits", "test rel. acc [95% CI]",
                 "ms/sample", "p99 ms", *(["cost / 1M req"] if priced else [])):
        table.add_column(head, justify="left" if head in ("", "configuration") else "right")
    for r in table_rows:
        ci = r["test_relative_accuracy_ci95"]
        acc = "–" if r["test_relative_accuracy"] is None else (
            f"{r['test_relative_accuracy']:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
        table.add_row(r["label"], r["config"], _f(r["value"], 5), _f(r["value_ci95"], 3),
                      _f(r["vs_no_exits"], 3), acc, _f(r["cost_ms"], 4), _f(r["p99_ms"], 4),
                      *([_f(r.get("cost_per_million"), 4)] if priced else []))
    out = Console()
    if not out.is_terminal:  # a file or a pipe: the whole table, not squeezed into 80 columns
        out = Console(width=180)
    out.print(table)
    for line in reasons:
        print(f"- {line}")
    s = result.spent
    print(f"simulated requests: search {s['search']:,} ({result.seconds['search']:.1f} s), "
          f"finalists {s['finalists']:,} ({result.seconds['finalists']:.1f} s)"
          + (f", baselines {result.seconds['baselines']:.1f} s" if "baselines" in
             result.seconds else ""))


def _f(v, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}g}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("optimize", help="search the config that meets a latency SLO at the "
                       "load with the accuracy kept", description=user_help(__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="the study YAML (its trace, profile, workload and run)")
    p.add_argument("-o", "--output", required=True, help="optimize folder (resumable)")
    p.add_argument("--slo-p99-ms", type=number(0), help="latency SLO (default: the study's "
                   "slo.latency_ms)")
    p.add_argument("--attainment", type=number(0, 1, high_open=True), default=0.99,
                   help="fraction of requests within the SLO (0.99: p99)")
    p.add_argument("--maximize", choices=("load", "accuracy"), help="objective (default: load)")
    p.add_argument("--minimize", choices=("replicas",), help="or: fewest replicas")
    p.add_argument("--load-rps", type=number(0), help="the load (req/s) --minimize replicas "
                   "and --maximize accuracy are judged at")
    p.add_argument("--min-relative-accuracy", type=number(0, 1, low_open=True),
                   help="accuracy / full model's, at least (on val), e.g. 0.99")
    p.add_argument("--min-accuracy", type=number(0, 1), help="absolute accuracy, at least")
    p.add_argument("--budget-ms", type=number(0), help="average compute per sample at batch 1, "
                   "at most (EENet's budget)")
    p.add_argument("--max-replicas", type=integer(1), default=1,
                   help="with --minimize replicas: the most to use")
    p.add_argument("--cost-per-replica-hour", type=number(0),
                   help="price of a replica-hour: results also read as cost per million requests")
    add_set_arg(p, "change a field of the study before the search (repeatable; as in "
                "simulate: a relative path is the study folder's), e.g. --set "
                "profile.path=$PWD/today.json")
    p.add_argument("--space", type=Path, help="YAML replacing dimensions of the search space")
    p.add_argument("--trials", type=integer(1), default=60, help="candidates simulated")
    p.add_argument("--finalists", type=integer(1), default=3, help="re-run on the full run")
    p.add_argument("--seeds", type=integer(1), default=3, help="seeds per finalist (CIs)")
    p.add_argument("--screen-requests", type=integer(100), default=10_000,
                   help="requests per replication of a screening probe")
    p.add_argument("--seed", type=integer(0), default=0, help="the search's seed")
    p.add_argument("--front", action="store_true", help="search the front of the objective "
                   "and val accuracy (NSGA-II) instead of the objective alone (TPE); the winner "
                   "is still the best that keeps the constraints")
    p.add_argument("--baselines", default="none,pame,eenet,grid,study",
                   help="baselines to run beside: none (no exits at its best batching), pame, "
                   "eenet, grid (same simulated requests), study (as given)")
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    p.add_argument("--validate", action="store_true", help="then measure the winner's and no "
                   "exits' capacity on the real serving loop of this machine")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="for --validate")
    p.add_argument("--validate-repeats", type=integer(1), default=3,
                   help="real streams per rate (5 rates around the prediction)")
    p.add_argument("--validate-requests", type=integer(200), default=6000,
                   help="requests per real stream")
    p.add_argument("--core", type=integer(0), default=None, help="for --validate: the CPU "
                   "core the real loop runs on")
    p.add_argument("--checkpoint", type=Path, default=None, help="for --validate: the real "
                   "model's weights (default: the shipped ones; rt-minilm6's: offramp traces "
                   "train --model rt-minilm6)")
    add_executor_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
