"""``margin``: exit when the top two classes are far enough apart.

The margin at exit k is p₁ − p₂, the gap between the largest and second-largest softmax
probabilities; a sample exits at the first exit whose margin reaches ``min_margin``. A
confidence rule like max-prob that also looks at the runner-up, so a head torn between two
classes does not exit. It needs the trace's per-exit softmax.

This module is the worked example of docs/architecture.md: a config class, a policy class,
and one line in :data:`offramp.policies.registry.REGISTRY`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from offramp.common.errors import InputError
from offramp.traces.format import ExitTrace

from .base import ExitPolicy
from .configs import PolicyConfigBase, Tunable


class MarginConfig(PolicyConfigBase):
    """``margin``: exit when p₁ − p₂ ≥ ``min_margin``."""

    tunable: ClassVar[dict[str, Tunable]] = {"min_margin": Tunable(low=0.05, high=0.95)}
    name: Literal["margin"] = "margin"
    min_margin: float = Field(0.5, gt=0, lt=1, description="top-1 minus top-2 probability")


class Margin(ExitPolicy):
    """Exit at the first exit whose top-1 − top-2 softmax margin ≥ ``min_margin``."""

    name = "margin"

    def __init__(self, min_margin: float = 0.5):
        self.min_margin = min_margin

    def fit(self, trace: ExitTrace, split: str = "val") -> Margin:
        if trace.softmax is None or trace.n_classes < 2:
            raise InputError(trace.source, "softmax", "margin needs the per-exit softmax of "
                             "at least two classes", "record the trace with its softmax")
        return super().fit(trace, split)

    def exit_mask(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        top2 = np.sort(np.asarray(trace.softmax[samples], dtype=np.float64), axis=2)[:, :, -2:]
        return (top2[:, :, 1] - top2[:, :, 0]) >= self.min_margin

