"""``offramp fit`` (fit one policy, save it) and ``offramp frontier`` (every policy, one plot)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from offramp.analysis.cli.options import integer, number
from offramp.common.errors import InputError
from offramp.common.outputs import check_output_dir, check_output_file
from offramp.core.modes import CostModel

if TYPE_CHECKING:
    import pandas as pd


def _study(args: argparse.Namespace, policy: dict | None = None):
    """A study config carrying the trace, profile, server and policy given on the command line."""
    from offramp.analysis.study.config import parse_config
    from offramp.analysis.study.overrides import apply_sets

    data = {"trace": {"path": args.trace},
            "profile": {"path": args.profile, **({"costs": args.costs} if args.costs else {})},
            "server": {"max_batch": args.max_batch, "exit_mode": args.exit_mode}}
    if policy is not None:
        data["policy"] = policy
    return parse_config(apply_sets(data, getattr(args, "set", []) or []), "command line")


FLAGS = {"name": "--policy", "budget_ms": "--budget-ms", "tolerance_pct": "--tolerance",
         "accuracy_target": "--accuracy-target", "cost_batch": "--cost-batch",
         "max_batch": "--max-batch", "exit_mode": "--exit-mode"}


@contextlib.contextmanager
def as_flags() -> Iterator[None]:
    """Errors about the study this command builds name the flags the user typed
    (``policy.budget_ms`` -> ``--budget-ms``, another policy field -> ``--param NAME``)."""
    try:
        yield
    except InputError as exc:
        if exc.source not in ("policy", "command line", "server") and not str(
                exc.source).startswith("command line"):
            raise
        name = (exc.field or "").split(".")[-1]
        if name in ("", "policy"):  # the policy as a whole: which constraint to give
            raise InputError("offramp fit", "--policy", exc.problem, "give --tolerance, "
                             "--budget-ms or --accuracy-target, or --param FIELD=VALUE "
                             "(docs/policies.md)") from None
        flag = FLAGS.get(name, f"--param {name}")
        fix = exc.fix
        for field in (f"policy.{name}", f"server.{name}", name):
            fix = fix.replace(f"set {field}", f"give {flag}").replace(field, flag or field)
        raise InputError("offramp fit", flag, exc.problem, fix) from None


def _inputs(args: argparse.Namespace, cfg):
    from offramp.analysis.study.resolve import load_study_profile, load_study_trace

    trace = load_study_trace(cfg, Path.cwd())
    return trace, load_study_profile(cfg, trace, Path.cwd())


def _exit_costs(cfg, profile, batch: int):
    """Per-sample cost (ms) of answering at each exit, as the study's budgeted policies see it."""
    from offramp.analysis.study.resolve import study_costs
    from offramp.policies.costs import exit_costs

    return exit_costs(study_costs(cfg, profile), batch)


def _fit_study(args: argparse.Namespace, policy: dict):
    """The study to fit; a budget left out is an error whose fix is the range the profile
    allows (the first exit's cost to the full model's)."""
    from offramp.policies.budget import budget_range

    try:
        return _study(args, policy)
    except InputError as exc:
        if "budget_ms" in policy or not (exc.field or "").endswith("budget_ms"):
            raise
        try:  # the profile's own errors come after the policy's, as without a budget
            cfg = _study(args)
            costs = _exit_costs(cfg, _inputs(args, cfg)[1], policy.get("cost_batch", 1))
        except (InputError, TypeError, ValueError):
            raise exc from None
        raise InputError(exc.source, exc.field, exc.problem,
                         budget_range(costs, "--budget-ms")) from None


def _warn_budget(args: argparse.Namespace, cfg, profile) -> None:
    """One line on stderr where --budget-ms is above the full model's cost (it binds nothing)."""
    if args.budget_ms is None or profile is None:
        return
    full = float(_exit_costs(cfg, profile, getattr(cfg.policy, "cost_batch", 1))[-1])
    if args.budget_ms > full:
        print(f"offramp fit: warning: --budget-ms {args.budget_ms:g} is above the full model's "
              f"cost ({full:.4g} ms per sample): it spends no more than the full model (every "
              "sample can go to the last exit)", file=sys.stderr)


def run_fit(args: argparse.Namespace) -> int:
    from offramp.analysis.study.config import parse_value
    from offramp.analysis.study.fitting import fit_and_report
    from offramp.policies.table import save_policy

    policy = {"name": args.policy}
    for key, value in (("budget_ms", args.budget_ms), ("tolerance_pct", args.tolerance),
                       ("accuracy_target", args.accuracy_target)):
        if value is not None:
            policy[key] = value
    if args.cost_batch != 1:
        policy["cost_batch"] = args.cost_batch
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InputError("--param", item, "must look like field=value", "e.g. --param n_fits=5")
        if key == "name":
            raise InputError("--param", item, "the policy is --policy", "drop --param name=...")
        if key in policy:  # given by its own flag too: which one wins would be a guess
            raise InputError("--param", item, f"{key} is also given by {FLAGS.get(key, key)}",
                             "give it once")
        policy[key] = parse_value(raw, "--param", item)
    check_output_file(args.output, "policy file")
    with as_flags():
        cfg = _fit_study(args, policy)
        trace, profile = _inputs(args, cfg)
        _warn_budget(args, cfg, profile)
        table, report = fit_and_report(cfg, trace, profile, args.cost_batch)
    path = save_policy(table, args.output, report)
    if args.json:
        print(json.dumps({"policy": table.get_params(), "report": report, "file": str(path)},
                         indent=1, default=str))
        return 0
    out = Console(width=None if Console().is_terminal else 120)
    grid = Table(title=f"{args.policy} on {trace.model_id} (fitted on val)")
    for col in ("split", "accuracy", "relative", "agreement", "avg cost ms", "exit fractions"):
        grid.add_column(col, justify="right")
    for split in ("val", "test"):
        r = report[split]
        grid.add_row(split, f"{r['accuracy']:.4f}", f"{r['relative_accuracy']:.4f}",
                     f"{r['agreement']:.4f}", f"{r['average_cost_ms']:.4g}",
                     " ".join(f"{x:.3f}" for x in r["exit_fractions"]))
    out.print(grid)
    out.print(f"parameters: {table.get_params()}")
    if report.get("why"):
        out.print(f"why: {report['why']}")
    out.print(f"wrote {path} (use it with `policy: {{from_file: {path}}}` in a study)")
    return 0


def run_frontier(args: argparse.Namespace) -> int:
    from offramp.analysis.studies.frontier import (
        FRONTIER_OUTPUTS,
        compute_frontier,
        frontier_configs,
        frontier_stem,
        write_frontier,
    )

    check_output_dir(args.output, FRONTIER_OUTPUTS)
    cfg = _study(args)
    trace, profile = _inputs(args, cfg)
    served = _served(args)
    out_dir = Path(args.output)
    n_points = sum(1 for _ in frontier_configs(trace, [1.0] * 5))
    with Progress(TextColumn("fitting policies"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True),
                  disable=args.json or not Console(stderr=True).is_terminal) as bar:
        task = bar.add_task("fit", total=n_points)
        points, bound, comparison = compute_frontier(
            trace, profile, cfg.server, args.cost_batch, args.eenet_fits, args.eenet_epochs,
            progress=lambda: bar.advance(task), costs=cfg.profile.costs, served=served)
    out_dir, stem = Path(args.output), frontier_stem(trace)
    title = write_frontier(trace, profile, points, bound, comparison, out_dir)
    if args.json:
        print(json.dumps({"attrs": points.attrs, "points": json.loads(points.to_json(orient="records")),
                          "oracle_bound": json.loads(bound.to_json(orient="records")),
                          "budgets": json.loads(comparison.to_json(orient="records"))},
                         indent=1))
        return 0
    con = Console(width=None if Console().is_terminal else 140)
    table = Table(title=f"{title.replace(chr(10), ' ')} · costs per exit (ms): "
                  + ", ".join(f"{c:.3g}" for c in points.attrs["costs_ms"]))
    for col in ("family", "setting", "val acc", "test acc", "relative", "test cost ms"):
        table.add_column(col, justify="left" if col in ("family", "setting") else "right")
    for _, r in points.iterrows():
        table.add_row(r["family"], r["setting"], f"{r['val_accuracy']:.4f}",
                      f"{r['test_accuracy']:.4f}", f"{r['test_relative_accuracy']:.4f}",
                      f"{r['test_cost_ms']:.4g}")
    con.print(table)
    if not comparison.empty:
        con.print(budget_table(comparison))
    con.print(f"wrote {out_dir}/{stem}.csv, {stem}-oracle.csv, {stem}-budgets.csv, {stem}.png")
    return 0


def _served(args: argparse.Namespace):
    """``--served STUDY``: each budgeted policy's capacity at ``--slo-p99-ms`` when it serves
    the study (its trace and profile replaced by the frontier's); None without it."""
    if args.served is None:
        if args.slo_p99_ms is not None:
            raise InputError("frontier", "--slo-p99-ms", "only means something with --served",
                             "add --served STUDY.yaml, or drop --slo-p99-ms")
        return None
    from offramp.analysis.studies.frontier_compare import served_capacity
    from offramp.analysis.study.config import load_config, naming_study, parse_config
    from offramp.analysis.study.overrides import apply_fields

    with naming_study(args.served):
        data = load_config(args.served).model_dump(mode="json", exclude_unset=True)
        # A file given here stays the same file from the study's folder; a shipped name stays.
        here = {name: str(Path(v).resolve()) if Path(v).is_file() else v
                for name, v in (("trace.path", args.trace), ("profile.path", args.profile))}
        data = apply_fields(data, here, f"{args.served} (--served)")
        cfg = parse_config(data, f"{args.served} (--served)")
    slo = args.slo_p99_ms if args.slo_p99_ms is not None else cfg.slo.latency_ms
    if slo is None:
        raise InputError("frontier", "--slo-p99-ms", "--served needs an SLO",
                         "give --slo-p99-ms, or slo.latency_ms in the study")
    return served_capacity(cfg, Path(args.served).parent, slo)


def budget_table(comparison: pd.DataFrame) -> Table:
    """The comparison at each budget as a terminal table."""
    from offramp.analysis.studies.frontier_compare import comparison_rows

    table = Table(title="At each budget, test split: accuracy (points vs max-prob, paired 95% "
                  "CI); the heuristic chosen on val")
    headers, rows = comparison_rows(comparison)
    for col in headers:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace", required=True, help="shipped trace name or .npz path")
    p.add_argument("--profile", required=True, help="shipped profile name or .json path")
    p.add_argument("--max-batch", type=integer(1), default=32, help="server batch size (PAME)")
    p.add_argument("--exit-mode", default="shrink", choices=["keep", "shrink"], help="(PAME)")
    p.add_argument("--cost-batch", type=integer(1), default=1,
                   help="batch size at which per-sample exit costs are taken")
    p.add_argument("--costs", choices=[c.value for c in CostModel], default=None,
                   help="which calibration of the profile gives stage costs (default: the most "
                   "calibrated it holds)")
    p.add_argument("--json", action="store_true", help="print results as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit one exit policy on a trace's val split and save it",
                       description="Fit a policy on the val split, report val and test accuracy "
                       "and cost, and save it (as its per-sample exit table) for `simulate`.")
    _common(p)
    p.add_argument("--policy", required=True, help="none, static:K, maxprob, entropy, patience, "
                   "oracle, eenet, pame, gati, safe-exit, ...")
    p.add_argument("--budget-ms", type=number(0), help="average cost budget per sample (eenet, exp)")
    p.add_argument("--tolerance", type=number(0, 100), help="τ: keep τ %% of the full model's accuracy")
    p.add_argument("--accuracy-target", type=number(0, 1), help="absolute accuracy target (gati)")
    p.add_argument("--param", action="append", default=[], metavar="FIELD=VALUE",
                   help="another policy field, e.g. n_fits=5 (repeatable)")
    p.add_argument("-o", "--output", required=True, help="policy JSON to write")
    p.set_defaults(func=run_fit)
    q = sub.add_parser("frontier", help="accuracy vs cost of every policy, with the oracle bound",
                       description="Fit every policy family at several settings on val, score on "
                       "test, and plot accuracy against average cost with the oracle LP bound.")
    _common(q)
    q.add_argument("--served", metavar="STUDY.yaml", default=None,
                   help="also each budgeted policy's capacity at --slo-p99-ms when it serves "
                   "this study (its workload, batching, exit mode; the frontier's trace and "
                   "profile)")
    q.add_argument("--slo-p99-ms", type=number(0), default=None,
                   help="with --served (default: the study's slo.latency_ms)")
    q.add_argument("--eenet-fits", type=integer(1), default=None,
                   help="EENet fits per budget (default: the paper's 10; 3 for a quicker look)")
    q.add_argument("--eenet-epochs", type=integer(1), default=None,
                   help="EENet's epochs per fit, at most (default: the paper's 1000)")
    q.add_argument("-o", "--output", default="frontier", help="folder for the table and plot")
    q.set_defaults(func=run_frontier)
