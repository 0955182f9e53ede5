"""The exit-policy interface, in scikit-learn's shape.

Parameters go to ``__init__``; ``fit(trace)`` learns on the val split and returns ``self``;
fitted state ends in ``_``. A policy answers two questions: for a batch that reached exit k,
which samples exit here (``decide``); and, for static policies, at which exit every sample
leaves (``exit_index``), which lets the simulator compute all exits up front.
"""

from __future__ import annotations

import inspect
from enum import Enum
from typing import Any, ClassVar

import numpy as np

from offramp.common.errors import InputError
from offramp.traces.format import ExitTrace


class ExitPolicy:
    """Base class: a static policy defined by a per-sample exit rule."""

    name: ClassVar[str] = "base"
    is_static: ClassVar[bool] = True

    def fit(self, trace: ExitTrace, split: str = "val") -> ExitPolicy:
        """Learn from ``split`` of the trace; baselines with nothing to learn just return self."""
        self.n_exits_ = trace.n_exits
        return self

    def _check_fitted(self, trace: ExitTrace) -> None:
        if not hasattr(self, "n_exits_"):
            raise RuntimeError(f"policy {self.name!r} is not fitted; call fit(trace) first")
        if trace.n_exits != self.n_exits_:
            raise InputError(trace.source, "pred", f"trace has {trace.n_exits} exits, the policy "
                             f"was fitted for {self.n_exits_}", "fit the policy on this trace")

    def exit_mask(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        """(len(samples), K) bool: would the sample exit at k if it reached k."""
        raise NotImplementedError

    def exit_index(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        """Exit index of each sample: the first exit whose rule fires; the last exit always."""
        self._check_fitted(trace)
        mask = self.exit_mask(trace, np.asarray(samples)).copy()
        mask[:, -1] = True
        return mask.argmax(axis=1)

    def decide(self, trace: ExitTrace, k: int, samples: np.ndarray) -> np.ndarray:
        """For samples that reached exit k: which exit here (all of them at the last exit)."""
        self._check_fitted(trace)
        if k == trace.n_exits - 1:
            return np.ones(len(samples), dtype=bool)
        return self.exit_mask(trace, np.asarray(samples))[:, k]

    def active_exits(self, n_exits: int) -> np.ndarray:
        """(K,) bool: which exit heads the policy consults; the server skips the others.

        All by default; placement policies (PAME, Gati) set ``active_exits_`` when fitted.
        """
        active = getattr(self, "active_exits_", None)
        out = np.ones(n_exits, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        out[-1] = True
        return out

    # Constructor parameters get_params leaves out (objects with no JSON form, e.g. a profile).
    unsaved_params: ClassVar[tuple[str, ...]] = ()

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters and, once fitted, the fitted values: plain JSON types.

        The parameters come from ``__init__``'s signature (as in scikit-learn), each read from
        the attribute of the same name; one left at a ``None`` default is omitted. A fitted
        policy adds :meth:`fitted_params` (a ``None`` there removes a parameter it replaces).
        """
        out: dict[str, Any] = {"name": self.name}
        for p in inspect.signature(type(self).__init__).parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) \
                    or p.name in self.unsaved_params:
                continue
            value = getattr(self, p.name)
            if value is not None or p.default is not None:
                out[p.name] = plain(value)
        if hasattr(self, "n_exits_"):
            for key, value in self.fitted_params().items():
                if value is None:
                    out.pop(key, None)
                else:
                    out[key] = plain(value)
        return out

    def fitted_params(self) -> dict[str, Any]:
        """What fitting learned, for :meth:`get_params` (``None`` drops a replaced parameter)."""
        return {}

    def explain(self) -> str | None:
        """Why the fit chose what it chose, in a sentence (None where there is nothing to
        add to its parameters)."""
        return None

    def __repr__(self) -> str:
        params = {k: v for k, v in self.get_params().items() if k != "name"}
        return f"{type(self).__name__}({params})"


def plain(value: Any, finite: bool = False) -> Any:
    """``value`` in plain Python types: arrays and NumPy scalars, enums, nested policies
    (their ``get_params``); with ``finite``, non-finite floats become strings (strict JSON)."""
    if isinstance(value, ExitPolicy):
        value = value.get_params()
    if isinstance(value, dict):
        return {str(k): plain(v, finite) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v, finite) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Enum):
        return value.value
    if finite and isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


class Controller:
    """The run-time state of a stateful policy in one run (a fitted policy never changes).

    The simulator's reference engine (and the real serving loop) calls ``begin_batch`` when a
    replica dispatches a batch (the returned seconds stall the replica first, e.g. the cost of
    a switch), ``decide`` at every exit, and ``observe`` for every completed request;
    ``history`` is what the run reports back. These defaults decide as the policy does and
    change nothing.
    """

    def __init__(self, policy: ExitPolicy):
        self.policy = policy
        self.history: list = []

    def begin_batch(self, now_s: float, replica: int) -> float:
        """Seconds the replica stalls before this batch (0 unless a switch is pending)."""
        return 0.0

    def decide(self, trace: ExitTrace, k: int, samples: np.ndarray, replica: int = 0
               ) -> np.ndarray:
        """For samples of ``replica``'s running batch that reached exit k: which exit here."""
        return self.policy.decide(trace, k, samples)

    def observe(self, now_s: float, latency_s: float, replica: int, exit_index: int) -> None:
        """One request finished ``latency_s`` after it arrived."""


class StatefulPolicy(ExitPolicy):
    """A policy that watches the running system (e.g. Dynamic-OFA's runtime manager).

    Its fitted object is shared by every run; each run asks it for a fresh
    :meth:`controller`, which holds everything that changes while the run goes on.
    """

    is_static = False

    def controller(self, n_replicas: int) -> Controller:
        """A fresh controller for one run on ``n_replicas`` replicas."""
        self._check_fitted_any()
        return Controller(self)

    def _check_fitted_any(self) -> None:
        if not hasattr(self, "n_exits_"):
            raise RuntimeError(f"policy {self.name!r} is not fitted; call fit(trace) first")
