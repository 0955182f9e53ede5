"""``cudagraph``: one CUDA graph per segment, head and batch size (PyTorch, fp16 or fp32).

Each graph is captured after warm-up on a side stream, with its own static input buffer, and
timed as ``graph.replay()`` between CUDA events: the closest to TensorRT where it is absent.
Compaction and the exit check stay eager (they run between graphs in a serving loop).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Call
from .torch_common import TorchBackend

WARMUP_BEFORE_CAPTURE = 3


def _clone(x: Any) -> Any:
    return x.clone() if isinstance(x, Tensor) else tuple(t.clone() for t in x)


class CudaGraphBackend(TorchBackend):
    """PyTorch CUDA graphs captured per (stage, batch size)."""

    name = "cudagraph"
    devices = ("cuda",)
    precisions = ("fp32", "fp16")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._graphs: list[tuple[torch.cuda.CUDAGraph, Any, Any]] = []

    def capture(self, module: torch.nn.Module, x: Any) -> Call:
        """Capture ``module(x)`` on a static copy of ``x``; return the graph's replay."""
        static_in = _clone(x)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_BEFORE_CAPTURE):
                module(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = module(static_in)
        self._graphs.append((graph, static_in, static_out))
        return graph.replay

    def segment(self, k: int, x: Any) -> Call:
        return self.capture(self.model.segments[k], x)

    def head(self, k: int, act: Any) -> Call:
        return self.capture(self.model.heads[k], act)

    def release(self) -> None:
        self._graphs.clear()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        return {"graphs": "one per (segment or head, batch size); compaction and exit check eager",
                "warmup_before_capture": WARMUP_BEFORE_CAPTURE}
