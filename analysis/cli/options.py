"""Typed command-line options: a bad value is one line naming the option (exit code 2)."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import NoReturn

from offramp.common.errors import InputError

_LEFT_BY = "_offramp_left_by"  # the innermost (sub)command that left arguments it did not know


class Parser(argparse.ArgumentParser):
    """argparse, with every usage error printed as one line (option, problem, where to look)
    instead of the usage block; subcommand parsers inherit it. An unknown option names the
    command it was given to (`offramp fit`, `offramp profile show`), not `offramp`."""

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and not hasattr(namespace, _LEFT_BY):  # a subcommand's parser returns first
            setattr(namespace, _LEFT_BY, self.prog)
        return namespace, extras

    def parse_args(self, args: Sequence[str] | None = None,
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        namespace, extras = self.parse_known_args(args, namespace)
        prog = vars(namespace).pop(_LEFT_BY, self.prog)
        if extras:
            _usage_error(prog, f"unrecognized arguments: {' '.join(extras)}")
        return namespace

    def error(self, message: str) -> NoReturn:
        _usage_error(self.prog, message)


def _usage_error(prog: str, message: str) -> NoReturn:
    print(f"offramp: error: {prog}: {message} (fix: see `{prog} --help`)", file=sys.stderr)
    sys.exit(2)


def integer(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def number(low: float = 0.0, high: float = math.inf, low_open: bool = True,
           high_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in (low, high] (``low_open`` False: from low on;
    ``high_open`` True: below high)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not math.isfinite(value) or not above or not below:
            lo = "(" if low_open else "["
            hi = "inf)" if math.isinf(high) else f"{high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be a finite number in {lo}{low:g}, {hi}, "
                                             f"got {text}")
        return value

    parse.__name__ = "number"
    return parse


def own_model(args: argparse.Namespace) -> dict | None:
    """A user's model from ``--model-factory`` / ``--data-factory`` (and their ``--*-arg``s),
    or None; one error where the data factory is missing."""

    if not args.model_factory:
        return None
    if not args.data_factory:
        raise InputError("--data-factory", None, "missing with --model-factory",
                         "give the data factory the trace was recorded with")
    return {"model_factory": args.model_factory, "model_args": args.model_arg,
            "data_factory": args.data_factory, "data_args": args.data_arg}


def exit_modes(text: str, option: str = "--modes") -> list[str]:
    """Comma-separated exit modes, checked against :class:`offramp.core.ExitMode`."""
    from offramp.common.errors import InputError
    from offramp.core.modes import ExitMode

    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in set(ExitMode)]
    if bad or not modes:
        raise InputError(option, None, f"unknown exit mode {bad[0] if bad else text!r}",
                         ", ".join(ExitMode))
    return modes


def add_set_arg(p: argparse.ArgumentParser, help: str = "override a field of the study "
                "(repeatable)") -> None:
    """``--set SECTION.FIELD=VALUE`` (repeatable): a field of the study changed."""
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help=help)


def add_executor_args(p: argparse.ArgumentParser) -> None:
    """``--workers``, ``--dask-local`` and ``--scheduler``: where the work runs."""
    p.add_argument("--workers", type=integer(1), default=None,
                   help="local process pool size (default: the CPU count)")
    p.add_argument("--dask-local", type=integer(1), default=None, metavar="N",
                   help="run on a Dask LocalCluster of N worker processes")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run on an existing Dask distributed cluster")


@contextlib.contextmanager
def executor_for(args: argparse.Namespace) -> Iterator[tuple[Executor, str]]:
    """The executor the work runs on, and a line saying which."""
    if args.scheduler and args.dask_local:
        raise InputError("--scheduler", None, "given with --dask-local", "give one of them")
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
    from offramp.common import pool as common_pool

    workers = args.workers or common_pool.workers()  # the cores this process may use
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield pool, f"process pool, {workers} workers"




def user_help(doc: str | None) -> str:
    """A module docstring as ``--help`` text: reST markup (``x``, :role:`x`) as plain text."""
    import re

    text = re.sub(r":(?:mod|func|class|data|meth):`([^`]+)`", r"\1", doc or "")
    return re.sub(r"``([^`]+)``", r"\1", text).strip()
