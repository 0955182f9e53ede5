"""Baselines and the bound: never exit, always exit at k, and the oracle."""

from __future__ import annotations

from typing import Any

import numpy as np

from offramp.common.errors import InputError
from offramp.traces.format import ExitTrace

from .base import ExitPolicy


class NoExit(ExitPolicy):
    """Every sample runs the full model."""

    name = "none"

    def exit_mask(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        return np.zeros((len(samples), trace.n_exits), dtype=bool)


class StaticExit(ExitPolicy):
    """Every sample exits at exit ``k`` (``static:k``)."""

    name = "static"

    def __init__(self, k: int = 0):
        self.k = k

    def fit(self, trace: ExitTrace, split: str = "val") -> StaticExit:
        if not 0 <= self.k < trace.n_exits:
            raise InputError("policy", "name", f"static:{self.k} but the trace has exits "
                             f"0..{trace.n_exits - 1}", "pick an existing exit")
        return super().fit(trace, split)

    def exit_mask(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        mask = np.zeros((len(samples), trace.n_exits), dtype=bool)
        mask[:, self.k] = True
        return mask

    def get_params(self) -> dict[str, Any]:
        return {"name": f"static:{self.k}"}


class Oracle(ExitPolicy):
    """The earliest correct exit (the last if none is correct): a bound, it reads the labels."""

    name = "oracle"

    def exit_mask(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        return trace.correct[samples]
