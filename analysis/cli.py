"""The ``offramp`` command line: one subcommand module per job, each with ``register``."""

from __future__ import annotations

import argparse
import importlib
import sys

from offramp.common.errors import InputError

# (module, attribute) of each subcommand group's ``register(subparsers)``; imported lazily so
# `offramp --help` stays fast and a group's heavy imports (torch) load only when used.
COMMANDS = {
    "demo": "offramp.analysis.cmd_demo",
    "fit": "offramp.analysis.cmd_fit",
    "profile": "offramp.analysis.cmd_profile",
    "simulate": "offramp.analysis.cmd_simulate",
    "traces": "offramp.analysis.cmd_traces",
    "validate": "offramp.analysis.cmd_validate",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="offramp",
        description="Simulate and fit exit policies for serving multi-exit DNNs with batching.")
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
    """Entry point: run a subcommand; print bad-input errors as one line, exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"offramp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("offramp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
