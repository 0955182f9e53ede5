"""``offramp profile calibrate``: fit a profile's served-cost model on the real serving loop, or
re-level one on a short stream served now (``--relevel``). The work lives in
``offramp.analysis.validation.calibrate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from offramp.analysis.cli.options import integer, number
from offramp.common.errors import InputError
from offramp.common.outputs import check_output_file

# (loads, modes, requests) when not given: a full calibration, or a re-levelling stream
DEFAULTS = {False: ("0.3,0.6,0.9", "keep,shrink", 3000), True: ("0.3", "shrink", 1000)}


def add_calibrate(sub: argparse._SubParsersAction) -> None:
    """Add ``profile calibrate`` to the profile command's actions."""
    cal = sub.add_parser("calibrate", help="fit a profile's served-cost model on the real "
                         "serving loop (short streams at a few loads and exit modes)",
                         description="Serve short streams of the real model through the real "
                         "loop (offramp validate's machinery) at each --loads busy fraction and "
                         "exit mode, fit one served-cost table on every stream's stage timings "
                         "and write the profile with it (meta.served_costs, with what it was "
                         "fitted on). Studies on it then predict with profile.costs: served. "
                         "With --relevel, keep the profile's own served table (its shape in "
                         "batch size, idle factors, noise) and move each stage's level to what "
                         "a short stream served now shows: a minute instead of a calibration.")
    cal.add_argument("profile", help="profile file or shipped name")
    cal.add_argument("-o", "--output", type=Path, required=True, help="calibrated profile (.json)")
    cal.add_argument("--relevel", action="store_true", help="re-level the profile's served "
                     "table on a short stream (default --loads 0.3 --modes shrink --requests "
                     "1000) instead of fitting a new one")
    cal.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    cal.add_argument("--trace", help="the model's trace (default: the shipped one of its model id)")
    cal.add_argument("--loads", help="busy fractions to serve at (default 0.3,0.6,0.9)")
    cal.add_argument("--modes", help="exit modes to serve (default keep,shrink)")
    cal.add_argument("--requests", type=integer(200),
                     help="requests per stream (two streams per load and mode; default 3000)")
    cal.add_argument("--served-seconds", type=number(0, low_open=False), default=3.0,
                     help="a served stream lasts at least this long at its rate")
    cal.add_argument("--max-batch", type=integer(1), default=32)
    cal.add_argument("--max-wait-ms", type=number(0, low_open=False), default=2.0)
    for name, what in (("model", "your own model (as in profile run); needs --data-factory"),
                       ("data", "its data")):
        cal.add_argument(f"--{name}-factory", metavar="MODULE:FUNCTION", help=what)
        cal.add_argument(f"--{name}-arg", action="append", default=[], metavar="NAME=VALUE")
    cal.add_argument("--checkpoint", type=Path, help="the real model's weights (default: the "
                     "shipped ones; rt-minilm6's: offramp traces train --model rt-minilm6)")
    cal.add_argument("--keep-runs", type=Path, help="keep the real runs in this folder")
    cal.add_argument("--quiet", action="store_true")
    cal.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from offramp.analysis.cli.options import exit_modes, own_model
    from offramp.analysis.validation.calibrate import calibrate_profile

    check_output_file(args.output, "profile file")
    loads_s, modes_s, requests = DEFAULTS[args.relevel]
    loads_s = args.loads or loads_s
    try:
        loads = tuple(float(x) for x in loads_s.split(","))
    except ValueError:
        raise InputError("--loads", loads_s, "not a list of numbers", "e.g. 0.3,0.6,0.9") from None
    modes = tuple(exit_modes(args.modes or modes_s))
    own = own_model(args)
    profile = calibrate_profile(args.profile, args.output, args.device, loads, modes,
                                args.requests or requests, args.served_seconds, args.max_batch,
                                args.max_wait_ms, args.trace, keep=args.keep_runs, own=own,
                                checkpoint=str(args.checkpoint) if args.checkpoint else None,
                                log=(lambda *_: None) if args.quiet else print,
                                relevel=args.relevel)
    fitted = profile.meta["served_costs"]
    if args.relevel:
        from offramp.profiling.served_level import describe_factors

        rel = fitted["relevelled"]
        print(f"wrote {args.output}: served table re-levelled on {rel['streams']} streams "
              f"({rel['stage_times']} stage times; busy "
              + ", ".join(f"{k} {v:.2f}" for k, v in rel["busy"].items()) + "): "
              + describe_factors(rel["factor"]) + "; shape kept from the calibration of "
              + str(fitted.get("fitted_on", {}).get("date", "?"))[:10])
        return 0
    print(f"wrote {args.output}: served costs fitted on {fitted['fitted_on']['streams']} streams "
          f"({fitted['stage_times']} stage times; busy "
          + ", ".join(f"{k} {v:.2f}" for k, v in fitted["fitted_on"]["busy"].items()) + ")")
    return 0
