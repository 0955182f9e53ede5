"""``offramp validate STUDY.yaml --device cpu|cuda -o OUT/``: run the study's config for real,
repeat it, simulate the same arrivals and samples, and judge the simulation against the real
runs' spread, cell by cell (docs/validation.md).
"""
# The work: analysis/validation/ (prepare the plan, judge, compare) and
# offramp.profiling.validate_real (the real side).

from __future__ import annotations

import argparse
from pathlib import Path

from offramp.analysis.cli.options import add_set_arg, exit_modes, integer, number, own_model, user_help
from offramp.common.errors import InputError
from offramp.common.outputs import check_output_dir
from offramp.core.modes import ExitMode


def _floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(what, None, f"{text!r} is not a comma-separated list of numbers",
                         "e.g. 0.3,0.6,0.9") from None
    if not vals or any(not v > 0 for v in vals):
        raise InputError(what, None, "needs positive numbers",
                         "e.g. --rates 200,500" if what == "--rates" else "e.g. 0.3,0.6,0.9")
    return vals


VALIDATE_OUTPUTS = ("plan.json", "inputs.npz", "exit_table.npy", "real", "real.parquet", "sim.parquet",
                    "validation.json", "validation.png", "served-profile.json",
                    "served-profile-L*.json", "sim-study-*.yaml")


def calibration_points(items: list[str]) -> list[dict[str, str]]:
    """``--calibrate-on load=0.3,mode=shrink`` items as [{"load": "0.3", "mode": "shrink"}]."""
    points = []
    for item in items:
        point = {}
        for part in filter(None, (x.strip() for x in item.split(","))):
            name, sep, value = part.partition("=")
            if not sep or name not in ("load", "mode") or not value:
                raise InputError("--calibrate-on", item, "must look like load=0.3,mode=shrink",
                                 "name a load (busy fraction or rate as given) and/or a mode")
            if name == "mode" and value not in set(ExitMode):
                raise InputError("--calibrate-on", item, f"{value!r} is not an exit mode",
                                 ", ".join(ExitMode))
            point[name] = value
        points.append(point)
    return points


def _loads(args: argparse.Namespace) -> list[dict[str, float]]:
    if args.rates:
        return [{"rate_rps": r} for r in _floats(args.rates, "--rates")]
    loads = [{"utilisation": u} for u in _floats(args.utilisation, "--utilisation")]
    if any(u >= 1 for u in (x["utilisation"] for x in loads)):
        raise InputError("--utilisation", None, "busy fractions must be below 1", "e.g. 0.3,0.6,0.9")
    return loads


def _serve(args: argparse.Namespace, cfg, base: Path, out: Path) -> None:
    """Check the real side's options, write the plan folder and run it."""
    import torch

    from offramp.analysis.validation.run import serve_real

    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", None, "CUDA is not available on this machine",
                         "run on an NVIDIA GPU box, or use --device cpu")
    loads, modes = _loads(args), exit_modes(args.modes)
    for name in ("repeats", "requests"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name}", None, "must be at least 1", "pass a positive number")
    serve_real(cfg, base, out, args.device, modes, loads, args.repeats, args.requests,
               log=(lambda *_: None) if args.quiet else print, precision=args.precision,
               profile_given=Path(args.profile) if args.profile else None,
               calib_requests=args.calib_requests, profile_runs=args.profile_runs,
               own=own_model(args), served_requests=args.served_requests,
               served_seconds=args.served_seconds, core=args.core,
               checkpoint=str(args.checkpoint) if args.checkpoint else None,
               seq_len=args.seq_len)


def run(args: argparse.Namespace) -> int:
    from offramp.analysis.study.config import naming_study
    from offramp.analysis.study.overrides import study_with_sets
    from offramp.analysis.validation.run import judge_folder

    out = Path(args.output)
    if args.real_from is None:
        check_output_dir(out, VALIDATE_OUTPUTS, "validation folder")
    cfg, named = study_with_sets(args.config, args.set)
    base = Path(args.config).parent
    calibrate_on = calibration_points(args.calibrate_on)
    if args.real_from is None:
        with naming_study(named):
            _serve(args, cfg, base, out)
        if args.real_only:
            print(f"wrote the real runs to {out}/real/ (compare later: offramp validate "
                  f"{args.config} --real-from {out})")
            return 0
    else:
        out = Path(args.real_from)
    with naming_study(named):
        result = judge_folder(cfg, base, out, args.sim_replications, args.isolated_stages,
                              args.profiler_costs, args.pooled_served, calibrate_on)
    print_table(result["table"], result["doc"])
    print(f"wrote {out}/validation.json, real.parquet, sim.parquet, validation.png")
    return 0


def print_table(table, doc) -> None:
    from rich.console import Console
    from rich.table import Table

    machine = doc.get("machine") or {}
    t = Table(title=f"real (median of {int(table['repeats'].max())} runs, spread) vs simulated"
              f" · {machine.get('device')} core {machine.get('core')} · torch "
              f"{machine.get('torch')}")
    for col in ("mode", "load", "stat", "real median", "spread", "sim", "error", "verdict"):
        t.add_column(col, justify="left" if col in ("mode", "stat", "verdict") else "right")
    for _, r in table.iterrows():
        load = r["load"]
        label = f"{load['utilisation']:.0%} busy" if "utilisation" in load else \
            f"{load['rate_rps']:g} req/s"
        verdict = r.get("verdict", "within" if r["within"] else "outside")
        t.add_row(r["mode"], label, r["stat"], f"{r['median']:.4g}", f"±{r['spread']:.1%}",
                  f"{r['sim']:.4g}", f"{r['error']:+.1%}",
                  {"within": "within", "outside": "OUTSIDE"}.get(verdict, verdict))
    console = Console(width=140)
    console.print(t)
    costs = sorted(set(table["costs"])) if "costs" in table else []
    if costs:
        console.print("stage costs: " + ", ".join(costs))
    console.print(overall(table))
    for part in (doc.get("explanations") or {}).values():
        console.print(f"- {part['line']}")


def overall(table) -> str:
    """The run's verdict in one line, with what to do about what did not pass."""
    verdicts = table.get("verdict", table["within"].map({True: "within", False: "outside"}))
    n = len(table)
    out, noisy = int((verdicts == "outside").sum()), int((verdicts == "too noisy").sum())
    flagged = sorted({(k, f) for k, fl in zip(table["key"], table.get("flagged", [[]] * n),
                                              strict=True) for f in fl})
    line = (f"overall: {n - out - noisy} of {n} cells within, {out} outside, {noisy} too noisy "
            "to judge")
    if out:
        line += ("; outside: where each operating point misses is below (queueing or in service, "
                 "and the exit whose stages), each stage in the stage table (validation.png)")
    if noisy:
        line += "; too noisy: more repeats or a quieter machine (the spread exceeds 25%)"
    if flagged:
        line += f"; {len(flagged)} repeats left out (saturated or off their busy fraction)"
    return line


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="run the config for real, repeat it, and judge the "
                       "simulation against the real spread", description=user_help(__doc__))
    p.add_argument("config", help="study YAML (trace, profile, policy, server, run.seed)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--utilisation", default="0.3,0.6,0.9",
                   help="loads as the real loop's busy fraction (found by a short calibration)")
    p.add_argument("--rates", help="or: absolute arrival rates, req/s, e.g. 200,500")
    p.add_argument("--modes", default="none,keep,shrink", help="exit modes to run")
    p.add_argument("--repeats", type=integer(1), default=5, help="real runs per mode and load")
    p.add_argument("--requests", type=integer(1), default=20_000, help="requests per real run")
    p.add_argument("--calib-requests", type=integer(1), default=1500,
                   help="requests per calibration probe")
    p.add_argument("--served-requests", type=integer(0), default=2000,
                   help="requests per served stream: one per mode, load and repeat, on arrivals "
                        "of its own, served next to the repeat; the simulation fits its stage "
                        "costs on these (0: none, use the profiler's)")
    p.add_argument("--served-seconds", type=number(0.0, low_open=False), default=10.0,
                   help="at least this long a served stream at its rate, where --served-requests "
                        "arrive sooner (at high load 2,000 requests are a few seconds: "
                        "docs/validation.md)")
    p.add_argument("--profile", help="use this profile instead of measuring one in the loop")
    p.add_argument("--profile-runs", type=integer(1), default=30, help="timed runs per stage and size "
                   "for the in-loop profile")
    p.add_argument("--sim-replications", type=integer(1), default=5)
    p.add_argument("--isolated-stages", action="store_true", help="simulate segments and heads "
                   "at their isolated times (default: with the in-loop residuals the profiler "
                   "measured)")
    p.add_argument("--profiler-costs", action="store_true",
                   help="simulate with the profiler's in-loop costs even where the folder has "
                        "served streams (which otherwise give the stage costs)")
    p.add_argument("--pooled-served", action="store_true",
                   help="one served-cost table from every load's served streams for every "
                        "load (default: each load's from its own, served-profile-L*.json)")
    p.add_argument("--core", type=integer(0), default=None,
                   help="CPU core the real side pins to (default: the last one allowed)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="trained weights for the real model (default: the shipped checkpoint)")
    p.add_argument("--seq-len", type=integer(1), default=64,
                   help="tokens per sample for rt-minilm6 (default: 64)")
    p.add_argument("--calibrate-on", action="append", default=[], metavar="load=U,mode=M",
                   help="fit the served-cost model only on the served streams of these "
                        "operating points (repeatable); every other cell is judged held out")
    add_set_arg(p, "change a field of the study (repeatable; as in simulate)")
    p.add_argument("--real-only", action="store_true", help="run the real side only")
    p.add_argument("--real-from", metavar="DIR", help="compare the real runs already in DIR")
    p.add_argument("--model-factory", metavar="MODULE:FUNCTION", help="your own model (as for "
                   "traces record --model-factory) instead of the trace's shipped one")
    p.add_argument("--model-arg", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--data-factory", metavar="MODULE:FUNCTION", help="with --model-factory: "
                   "the data factory the trace was recorded with (its test batches)")
    p.add_argument("--data-arg", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("-o", "--output", default="validation", help="output folder")
    p.set_defaults(func=run)
