"""Load a user's factory by name: ``package.module:function`` plus ``key=value`` arguments.

How ``--model-factory`` / ``--data-factory`` (and their ``--model-arg`` / ``--data-arg``)
reach user code. Standard library only (the GPU-side profiler uses it too).
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError


def parse_args(items: Sequence[str], option: str) -> dict[str, Any]:
    """``["k=v", ...]`` as keyword arguments; each value a Python literal if it reads as one
    (``3``, ``0.5``, ``True``, ``[1, 2]``, ``'x'``), else the plain string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(option, item, "must look like name=value", f"e.g. {option} seed=0")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def load_factory(spec: str, option: str) -> Callable[..., Any]:
    """The callable ``package.module:function`` names (the current folder is importable, as
    for ``python -m``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(option, spec, "must look like package.module:function",
                         f"e.g. {option} mymodels.exits:make_model")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise InputError(option, spec, f"cannot import {module_name!r} ({exc})",
                         "run from the folder that holds it, or install it") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise InputError(option, spec, f"{module_name} has no {attr!r}",
                             "name a function of that module")
    if not callable(fn):
        raise InputError(option, spec, f"{attr!r} is not callable", "name a function")
    return fn


def call_factory(spec: str, args: Sequence[str], option: str, arg_option: str) -> Any:
    """Load ``spec`` and call it with ``args`` (``key=value``); a ``TypeError`` from the call
    (a wrong argument) is one error naming the factory."""
    fn = load_factory(spec, option)
    kwargs = parse_args(args, arg_option)
    try:
        return fn(**kwargs)
    except TypeError as exc:
        raise InputError(option, spec, f"the call failed: {exc}",
                         f"check its arguments ({arg_option} name=value)") from None
