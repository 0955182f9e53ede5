"""The ``offramp`` command line: one subcommand module per job, each with ``register``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from offramp.analysis.cli.options import Parser
from offramp.common.errors import InputError

# (module, attribute) of each subcommand group's ``register(subparsers)``; imported lazily so
# `offramp --help` stays fast and a group's heavy imports (torch) load only when used.
COMMANDS = {
    "capacity": "offramp.analysis.cli.capacity",
    "concurrency": "offramp.analysis.cli.concurrency",
    "demo": "offramp.analysis.cli.demo",
    "fit": "offramp.analysis.cli.fit",
    "optimize": "offramp.analysis.cli.optimize",
    "pipeline": "offramp.analysis.cli.pipeline",
    "profile": "offramp.analysis.cli.profile",
    "report": "offramp.analysis.cli.report",
    "simulate": "offramp.analysis.cli.simulate",
    "sweep": "offramp.analysis.cli.sweep",
    "traces": "offramp.analysis.cli.traces",
    "validate": "offramp.analysis.cli.validate",
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="offramp",
        description="Simulate and fit exit policies for serving multi-exit DNNs with batching.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            # A bare GPU box may lack what other commands need (e.g. pydantic, rich); keep the
            # rest usable and say what is missing when this one is asked for.
            _unavailable(sub, name, str(exc.name))
            continue
        mod.register(sub)
    return parser


def _unavailable(sub: argparse._SubParsersAction, name: str, missing: str) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise InputError(f"offramp {name}", None, f"needs the Python package {missing!r}",
                         "install offramp with its dependencies: bash .ci/install")

    p = sub.add_parser(name, help=f"(unavailable here: needs {missing})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=fail)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a subcommand. Bad input prints one line and exits 2; an unexpected
    error (a bug) prints one line and exits 1; ``--debug`` (or ``OFFRAMP_DEBUG=1``) shows
    the traceback of either instead."""
    from offramp.common import pool
    from offramp.common.machine import set_command

    set_command(["offramp", *(sys.argv[1:] if argv is None else argv)])
    pool.enable()  # independent fits may use worker processes (common/pool.py)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed in one line
        return int(exc.code or 0)
    debug = args.debug or os.environ.get("OFFRAMP_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("offramp: interrupted", file=sys.stderr)
        return 130
    except InputError as exc:
        if debug:
            raise
        print(f"offramp: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine said no: a full disk, a vanished file, permissions
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"offramp: error: {where}{exc.strerror or exc} (fix: check that path and the "
              "free space; `offramp --debug ...` shows where it happened)", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            raise
        print(f"offramp: internal error: {type(exc).__name__}: {exc} (this is a bug in "
              "offramp, not in your input; rerun with `offramp --debug ...` for the traceback "
              "and report it)", file=sys.stderr)
        return 1

