"""Bring your own model: the multi-exit protocol, and recording a trace from your data.

**The protocol** (what offramp needs from a multi-exit network, checked by :func:`check_model`):

- ``segments``: an ``nn.ModuleList`` of K backbone pieces; segment k maps the activation at
  exit k-1 (the model input for k = 0) to the activation at exit k. An activation may be a
  tensor or a tuple of tensors (passed on as one argument).
- ``heads``: an ``nn.ModuleList`` of K exit classifiers; head k maps the activation at exit k
  to logits (batch, C). The last head is the full model's output.
- ``example_input(b)``: a model input for a batch of b (a tensor or a tuple of tensors); the
  profiler times every stage on it.
- optional: ``model_id`` (else give ``--model-id``), ``exit_names``, ``exit_positions``.

**The data** (checked by :func:`check_loaders` and :func:`factory_batches`): a data factory
returns ``{"val": batches, "test": batches}``, each any iterable of ``(inputs, labels)`` pairs
whose inputs are what ``example_input`` gives (a tensor or a tuple of tensors).

:func:`record_from_loaders` runs such a model over the user's val and test batches and builds
the validated trace, as ``offramp traces record --model-factory ... --data-factory ...`` does;
``offramp validate`` reads the same factory's test batches through :func:`factory_batches`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from offramp.common.errors import InputError

from .format import SPLITS, ExitTrace
from .imports import import_trace


def check_model(model: Any, source: str = "model") -> None:
    """Raise one :class:`InputError` unless ``model`` follows the multi-exit protocol."""
    for name in ("segments", "heads"):
        part = getattr(model, name, None)
        if not isinstance(part, torch.nn.ModuleList) or len(part) == 0:
            raise InputError(source, name, "must be a non-empty torch.nn.ModuleList",
                             "see offramp.traces.own for the multi-exit protocol")
    if len(model.segments) != len(model.heads):
        raise InputError(source, "heads", f"{len(model.heads)} heads for "
                         f"{len(model.segments)} segments", "one head per segment (exit)")
    if not callable(getattr(model, "example_input", None)):
        raise InputError(source, "example_input", "missing: example_input(b) must give an "
                         "input batch of b", "add it (see offramp.traces.own)")
    x = model.example_input(2)
    check_inputs(x, source, "example_input(2)")
    with torch.no_grad():
        run_exits(model, x, source, "example_input(2)")


def check_inputs(x: Any, source: str, where: str) -> None:
    """One :class:`InputError` unless ``x`` is a tensor or a tuple of tensors."""
    parts = x if isinstance(x, tuple) else (x,)
    if not parts or not all(isinstance(t, torch.Tensor) for t in parts):
        got = type(x).__name__ if not isinstance(x, tuple) else \
            f"tuple of {', '.join(type(t).__name__ for t in parts)}"
        raise InputError(source, where, f"is a {got}, not a torch.Tensor (or a tuple of them)",
                         "give tensors, e.g. torch.as_tensor(x) (the protocol: offramp.traces.own)")


def check_loaders(loaders: Any, source: str) -> None:
    """One :class:`InputError` unless a data factory gave ``{"val": batches, "test": batches}``."""
    if not isinstance(loaders, Mapping) or set(loaders) != set(SPLITS):
        got = sorted(map(str, loaders)) if isinstance(loaders, Mapping) else \
            f"a {type(loaders).__name__}"
        raise InputError(source, None, "must give {'val': batches, 'test': batches}, got "
                         f"{got}", "return both splits from the data factory (the protocol: "
                         "offramp.traces.own)")


def factory_batches(loaders: Mapping[str, Any], name: str, source: str
                    ) -> Iterator[tuple[str, Any, Any]]:
    """Split ``name``'s batches of a checked data factory as ``(where, inputs, labels)``
    (``where``: ``"test[3]"``), each checked against the protocol as it comes."""
    try:
        batches = iter(loaders[name])
    except TypeError:
        raise InputError(source, name, "is not an iterable of (inputs, labels) batches (got "
                         f"{type(loaders[name]).__name__})", "give a list or generator of "
                         "(x, y) batches (the protocol: offramp.traces.own)") from None
    for i, batch in enumerate(batches):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            got = f"{len(batch)} items" if isinstance(batch, (tuple, list)) else \
                f"a {type(batch).__name__}"
            raise InputError(source, f"{name}[{i}]", f"must be an (inputs, labels) pair, got "
                             f"{got}", "yield (x, y) batches (the protocol: offramp.traces.own)")
        x, y = batch
        check_inputs(x, source, f"{name}[{i}] inputs")
        yield f"{name}[{i}]", x, y


def run_exits(model: Any, x: Any, source: str, where: str) -> list[torch.Tensor]:
    """:func:`forward_exits`, with a failure inside the user's model (or a head that does not
    give (batch, classes) logits) as one :class:`InputError` naming the input."""
    try:
        out = forward_exits(model, x)
    except Exception as exc:  # the user's code: report it as theirs, with its message
        raise InputError(source, where, f"the model failed on it ({type(exc).__name__}: "
                         f"{exc})", "check that segment k takes what segment k-1 gives and "
                         "head k maps it to logits (the protocol: offramp.traces.own)") from None
    for k, logits in enumerate(out):
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise InputError(source, f"heads[{k}]", f"gave {shape} on {where}, not (batch, "
                             "classes) logits", "return logits of shape (batch, classes)")
    return out


def forward_exits(model: Any, x: Any) -> list[torch.Tensor]:
    """Every exit's logits on input ``x``: segment k then head k, for k = 0..K-1 (the
    protocol's composition; what the profiler's exported pieces are checked against)."""
    out = []
    for seg, head in zip(model.segments, model.heads, strict=True):
        x = seg(x)
        out.append(head(x))
    return out


@torch.no_grad()
def record_from_loaders(model: Any, loaders: Mapping[str, Iterable[Any]], *,
                        model_id: str | None = None, dataset: str,
                        source: str = "data factory",
                        provenance: dict[str, Any] | None = None) -> ExitTrace:
    """A validated trace of ``model`` on ``loaders["val"]`` and ``loaders["test"]`` (each an
    iterable of ``(inputs, labels)`` batches)."""
    check_model(model)
    model_id = model_id or getattr(model, "model_id", None)
    if not model_id:
        raise InputError("model", "model_id", "missing", "give --model-id (or model.model_id)")
    check_loaders(loaders, source)
    model.eval()
    outs, labels, split = [], [], []
    for name in SPLITS:
        for where, x, y in factory_batches(loaders, name, source):
            exits = run_exits(model, x, source, f"{where} inputs")
            logits = torch.stack([h.double() for h in exits], dim=1)
            outs.append(torch.softmax(logits, dim=2).cpu().numpy())
            y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
            labels.append(y.reshape(-1))
            split.append(np.full(len(labels[-1]), SPLITS.index(name), dtype=np.uint8))
    if not outs:
        raise InputError(source, None, "gave no batches", "yield (x, y) batches for val and test")
    return import_trace(
        np.concatenate(outs), np.concatenate(labels), kind="probs", split=np.concatenate(split),
        model_id=model_id, dataset=dataset, source=source,
        exit_positions=getattr(model, "exit_positions", None),
        exit_names=getattr(model, "exit_names", None),
        provenance={"recorded_with": "record_from_loaders", **(provenance or {})})
