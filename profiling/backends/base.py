"""What a measurement backend provides: prepared, repeatable calls of each stage at one batch size.

A backend owns how the model runs (eager PyTorch, CUDA graphs, ONNX Runtime, TensorRT). The
measurement loop (``offramp.profiling.measure``) asks it, per batch size, for a zero-argument
callable per stage and times that callable. Activations are backend-native (torch tensors on the
device, or numpy arrays for ONNX Runtime). torch, numpy and the standard library only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from offramp.common.errors import InputError
from offramp.core.modes import StageKind

Call = Callable[[], Any]
EXIT_THRESHOLD = 0.5  # max-softmax threshold of the overhead stage's exit check


class Backend(ABC):
    """Runs the stages of one multi-exit model on one device at one precision."""

    name: ClassVar[str]
    devices: ClassVar[tuple[str, ...]]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def __init__(self, model: nn.Module, device: str, precision: str,
                 workdir: str | Path | None = None):
        self.check_supported(device, precision)
        self.model = model.eval()
        self.n_exits = len(model.segments)
        self.device = device
        self.precision = precision
        self.workdir = Path(workdir) if workdir is not None else None

    @classmethod
    def check_supported(cls, device: str, precision: str) -> None:
        """Raise :class:`InputError` unless this backend runs on ``device`` at ``precision``."""
        if device not in cls.devices:
            raise InputError("--device", None, f"backend {cls.name!r} runs on "
                             f"{'/'.join(cls.devices)}, not {device!r}",
                             f"use --device {cls.devices[0]} or another backend")
        if precision not in cls.precisions:
            raise InputError("--precision", None, f"backend {cls.name!r} on {device} supports "
                             f"{'/'.join(cls.precisions)}, not {precision!r}",
                             f"use --precision {cls.precisions[0]}")

    def setup(self, example: Any, batches: Sequence[int]) -> None:
        """One-off preparation before timing (export, engine build for ``batches``)."""
        return None

    @abstractmethod
    def activations(self, x: Any) -> list[Any]:
        """Backend-native ``[input, activation at exit 0, ..., activation at exit K-1]``."""

    @abstractmethod
    def segment(self, k: int, x: Any) -> Call:
        """A call running segment k on input ``x`` (the activation at exit k-1, or the input)."""

    @abstractmethod
    def head(self, k: int, act: Any) -> Call:
        """A call running exit head k on the activation at exit k."""

    @abstractmethod
    def compact(self, k: int, act: Any, index: Sequence[int]) -> Call:
        """A call gathering rows ``index`` of the activation at exit k into a contiguous batch."""

    @abstractmethod
    def overhead(self, logits: Any) -> Call:
        """A call of the serving loop's per-batch host work on one exit's logits."""

    @abstractmethod
    def logits(self, act: Any, k: int) -> Any:
        """Backend-native logits of head k on ``act`` (input of the overhead stage)."""

    def timer(self, kind: StageKind) -> str:
        """``cuda`` (CUDA events) or ``host`` (perf_counter_ns) for a stage kind."""
        return "cuda" if self.device == "cuda" and StageKind(kind) is not StageKind.OVERHEAD else "host"

    def release(self) -> None:
        """Free what was prepared for the last batch size (graphs, buffers)."""
        return None

    def software(self) -> dict[str, str]:
        """Versions of what this backend runs on, beyond python/torch/numpy."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Backend-specific metadata for the profile (what exactly was measured)."""
        return {}
