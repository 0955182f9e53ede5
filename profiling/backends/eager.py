"""``eager``: the PyTorch modules called directly, on the CPU or a CUDA GPU."""

from __future__ import annotations

from typing import Any

from offramp.common.errors import InputError

from .base import Call
from .torch_common import TorchBackend


class EagerBackend(TorchBackend):
    """Eager PyTorch: each stage is one Python call of the module (kernel launches included)."""

    name = "eager"
    devices = ("cpu", "cuda")
    precisions = ("fp32", "fp16")

    @classmethod
    def check_supported(cls, device: str, precision: str) -> None:
        super().check_supported(device, precision)
        if device == "cpu" and precision != "fp32":
            raise InputError("--precision", None, "eager on the CPU measures fp32 only",
                             "use --precision fp32, or --device cuda for fp16")

    def segment(self, k: int, x: Any) -> Call:
        seg = self.model.segments[k]
        return lambda: seg(x)

    def head(self, k: int, act: Any) -> Call:
        head = self.model.heads[k]
        return lambda: head(act)
