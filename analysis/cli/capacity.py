"""``offramp capacity STUDY.yaml --slo-p99-ms X``: the highest load that meets the SLO (default:
the study's slo.latency_ms), with the study's p99, accuracy and exit fractions there.
``--compare`` runs it for several variants of the study (``section.field=value`` overrides,
comma-separated) and prints one table; ``-o`` writes it with a plot and a page.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

from offramp.analysis.cli.options import add_set_arg, integer, number, user_help
from offramp.common.errors import InputError
from offramp.common.outputs import check_output_dir


def _variants(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    if not args.compare:
        return [("study", [])]
    out = []
    for item in args.compare:
        # Fields are comma-separated; a comma inside a YAML value (a pipeline's groups) is not
        # followed by the next section.field=.
        sets = [s.strip() for s in re.split(r",(?=\s*\w+\.\w+=)", item) if s.strip()]
        if not sets:
            raise InputError("--compare", item, "is empty", "e.g. --compare server.exit_mode=keep")
        out.append((item, sets))
    return out


def _fields(args: argparse.Namespace, sets: list[str]) -> dict:
    """The --set fields, then this variant's --compare ones (the later wins), each error naming
    the flag it came from."""
    from offramp.analysis.study.overrides import parse_sets

    return {**parse_sets(args.set), **parse_sets(sets, "--compare")}


def _slo(args: argparse.Namespace, study_slo: float | None) -> tuple[float, str]:
    """(bound ms, statistic): --slo-p99-ms or --slo-mean-ms, else the study's slo.latency_ms
    at --attainment."""
    if args.slo_p99_ms is not None:
        return args.slo_p99_ms, "attainment"
    if args.slo_mean_ms is not None:
        return args.slo_mean_ms, "mean"
    if study_slo is None:
        raise InputError("capacity", "--slo-p99-ms", "give one of --slo-p99-ms and "
                         "--slo-mean-ms (or slo.latency_ms in the study)", "e.g. --slo-p99-ms 20")
    return study_slo, "attainment"


def run(args: argparse.Namespace) -> int:
    from offramp.analysis.studies.capacity import capacity_explained
    from offramp.analysis.study.config import load_config, naming_study, parse_config
    from offramp.analysis.study.cost import cost_per_million
    from offramp.analysis.study.overrides import apply_fields, set_name

    if args.slo_p99_ms is not None and args.slo_mean_ms is not None:
        raise InputError("capacity", "--slo-p99-ms", "give exactly one of --slo-p99-ms and "
                         "--slo-mean-ms", "e.g. --slo-p99-ms 20")
    base = Path(args.config).parent
    cfg0 = load_config(args.config)
    if args.output is not None:
        check_output_dir(args.output, CAPACITY_OUTPUTS, "capacity folder")
    console = Console(stderr=True)
    results = []
    for label, sets in _variants(args):
        data = apply_fields(cfg0.model_dump(mode="json", exclude_unset=True),
                            _fields(args, sets), "--compare" if sets else "--set")
        named = f"{args.config} with {label}" if sets else set_name(args.config, args.set)
        cfg = parse_config(data, named)

        def show(p, label=label):
            if not args.json:
                console.print(f"  {label}: {p.rate_rps:9.1f} req/s -> "
                              f"{p.value:.4f} ± {p.ci95:.4f} "
                              f"({'holds' if p.holds else 'fails'}, {p.replications} reps)")

        # The variant's own SLO (after --set and --compare) where no bound is given.
        slo, stat = _slo(args, cfg.slo.latency_ms)
        with naming_study(named):
            res, there = capacity_explained(cfg, base, slo, args.attainment, stat, args.tol,
                                            args.max_replications, progress=show)
        there["cost_per_million"] = cost_per_million(args.cost_per_replica_hour,
                                                     cfg.server.replicas, res.capacity_rps)
        results.append((label, res, there))
    doc = {label: {**r.as_dict(), "at_capacity": there} for label, r, there in results}
    if args.output is not None:
        _write(Path(args.output), doc, args)
    if args.json:
        print(json.dumps(doc, indent=1, default=_plain))
        return 0
    _print_table(args, results)
    if args.output is not None:
        print(f"wrote {args.output}/capacity.json, capacity.png and report.html")
    return 0


def _print_table(args: argparse.Namespace, results: list) -> None:
    """One row per variant: its capacity and what holds there."""
    slos = {(r.slo["statistic"], r.slo["latency_ms"]) for _, r, _ in results}
    stat, bound = next(iter(slos))
    what = ("each variant's own SLO" if len(slos) > 1 else
            f"p{100 * args.attainment:g} <= {bound:g} ms" if stat == "attainment"
            else f"mean latency <= {bound:g} ms")
    table = Table(title=f"capacity of {args.config} at {what}")
    for col in ("variant", "capacity req/s", "± req/s", "p99 ms there", "accuracy",
                "exit fractions", "busy", "probes (uncertain)",
                *(["cost per M requests"] if args.cost_per_replica_hour is not None else [])):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for label, r, there in results:
        cost = there["cost_per_million"]
        table.add_row(label, f"{r.capacity_rps:.1f}", f"{r.plus_minus_rps:.1f}",
                      f"{there['latency_p99_ms']:.2f}", f"{there['accuracy']:.4f}",
                      " ".join(f"{f:.2f}" for f in there["exit_fractions"]),
                      f"{there['utilisation']:.2f}",
                      f"{len(r.probes)} ({sum(not p.certain for p in r.probes)})",
                      *([f"{cost:.4g}"] if cost is not None else []))
    Console(width=None if Console().is_terminal else 160).print(table)


CAPACITY_OUTPUTS = ("capacity.json", "capacity.png", "report.html")


def _plain(value):
    return float(value)


def _write(folder: Path, doc: dict, args: argparse.Namespace) -> None:
    """capacity.json (every variant: the search, its probes, what holds at the capacity),
    capacity.png and report.html, each atomically."""
    from offramp.analysis.report.plots import plot_capacity
    from offramp.analysis.report.search_pages import capacity_report
    from offramp.common.atomic import atomic_path
    from offramp.common.machine import command_line

    folder.mkdir(parents=True, exist_ok=True)
    full = {"study": str(args.config), "command": command_line(), "variants": doc}
    with atomic_path(folder / "capacity.json") as tmp:
        tmp.write_text(json.dumps(full, indent=1, default=_plain) + "\n")
    plot_capacity(doc, folder / "capacity.png")
    with atomic_path(folder / "report.html") as tmp:
        tmp.write_text(capacity_report(folder, json.loads(json.dumps(full, default=_plain))))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("capacity", help="the highest arrival rate that meets a latency SLO",
                       description=user_help(__doc__))
    p.add_argument("config", help="study YAML (its workload rate is where the search starts)")
    p.add_argument("--slo-p99-ms", type=number(0), help="(default: the study's slo.latency_ms) "
                   "latency bound for the --attainment "
                   "quantile (default p99)")
    p.add_argument("--attainment", type=number(0, 1, high_open=True), default=0.99,
                   help="share of requests within the bound (0.99: p99)")
    p.add_argument("--slo-mean-ms", type=number(0), help="or: a bound on the mean latency")
    p.add_argument("--tol", type=number(0, 1), default=0.01,
                   help="stop when the bracket is within this fraction of the capacity")
    p.add_argument("--compare", action="append", default=[], metavar="FIELD=VALUE,...",
                   help="a variant of the study (repeatable), e.g. server.exit_mode=keep")
    add_set_arg(p, "override a config field for every variant")
    p.add_argument("--max-replications", type=integer(1), default=None,
                   help="most replications of an uncertain probe (default 4x the study's)")
    p.add_argument("--cost-per-replica-hour", type=number(0), default=None,
                   help="price of a replica-hour: also give each capacity as the cost of a "
                   "million requests served there")
    p.add_argument("--json", action="store_true", help="print every probe as JSON")
    p.add_argument("-o", "--output", default=None, help="also write capacity.json, capacity.png "
                   "and report.html to this folder")
    p.set_defaults(func=run)
