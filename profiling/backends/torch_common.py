"""Shared parts of the PyTorch backends: placement, precision, compaction and the exit check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .base import EXIT_THRESHOLD, Backend, Call

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def to_device(obj: Any, device: str, dtype: torch.dtype) -> Any:
    """Move a tensor or tuple of tensors to ``device``; floating tensors are cast to ``dtype``."""
    if isinstance(obj, Tensor):
        obj = obj.to(device)
        return obj.to(dtype) if obj.is_floating_point() else obj.contiguous()
    return tuple(to_device(t, device, dtype) for t in obj)


def gather(act: Any, index: Tensor) -> Any:
    """Rows ``index`` of an activation (tensor or tuple) as new contiguous tensors."""
    if isinstance(act, Tensor):
        return act.index_select(0, index)
    return tuple(t.index_select(0, index) for t in act)


def exit_check(logits: Tensor, device: str, threshold: float = EXIT_THRESHOLD) -> Tensor:
    """The minimal serving loop's per-batch work after a head.

    Max-softmax vs threshold on the device, the exit mask to the host (a sync), the survivors'
    indices on the host, and those indices back to the device for the next gather.
    """
    conf = torch.softmax(logits.float(), dim=-1).amax(dim=-1)
    exited = (conf >= threshold).cpu()
    keep = torch.nonzero(~exited).squeeze(1)
    return keep.to(device)


class TorchBackend(Backend):
    """A backend whose activations are torch tensors on ``self.device``.

    ``torch_precision`` fixes the dtype of the PyTorch side (None: follow ``precision``).
    """

    torch_precision: str | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.dtype = DTYPES[self.torch_precision or self.precision]
        self.model = self.model.to(self.device, self.dtype)

    def place(self, x: Any) -> Any:
        return to_device(x, self.device, self.dtype)

    def activations(self, x: Any) -> list[Any]:
        acts = [self.place(x)]
        with torch.inference_mode():
            for seg in self.model.segments:
                acts.append(seg(acts[-1]))
        self.sync()
        return acts

    def logits(self, act: Any, k: int) -> Any:
        with torch.inference_mode():
            return self.model.heads[k](act)

    def compact(self, k: int, act: Any, index: Sequence[int]) -> Call:
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.device)
        return lambda: gather(act, idx)

    def overhead(self, logits: Any) -> Call:
        return lambda: exit_check(logits, self.device)

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def software(self) -> dict[str, str]:
        if self.device != "cuda":
            return {}
        return {"cuda": str(torch.version.cuda), "cudnn": str(torch.backends.cudnn.version())}
