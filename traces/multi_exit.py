"""The interface every multi-exit network here follows (:class:`MultiExitNet`, described in
traces/models.py) and its cost accounting (multiply-accumulates per segment)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class MultiExitNet(nn.Module):
    """Base class: a backbone cut into ``segments`` with one head per exit."""

    model_id: str = "multi-exit"
    num_classes: int
    config: dict[str, Any]
    exit_names: list[str]
    exit_positions: list[float]

    def __init__(self) -> None:
        super().__init__()
        self.segments = nn.ModuleList()
        self.heads = nn.ModuleList()

    @property
    def n_exits(self) -> int:
        return len(self.segments)

    def activations(self, x: Any) -> list[Any]:
        """The activation at every exit (input to the heads)."""
        acts = []
        for seg in self.segments:
            x = seg(x)
            acts.append(x)
        return acts

    def forward_exits(self, x: Any) -> list[Tensor]:
        """Per-exit logits: the composition of segments, each followed by its head."""
        out = []
        for seg, head in zip(self.segments, self.heads, strict=True):
            x = seg(x)
            out.append(head(x))
        return out

    def forward(self, x: Any) -> list[Tensor]:
        return self.forward_exits(x)

    def example_input(self, batch_size: int) -> Any:
        raise NotImplementedError


def _macs_per_segment(model: MultiExitNet, x: Any) -> list[int]:
    """Multiply-accumulates of each segment's Conv2d/Linear layers on one example batch of 1."""
    counts: list[int] = []

    def hook(mod: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
        if isinstance(mod, nn.Conv2d):
            per_out = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            counts[-1] += int(out.numel() // out.shape[0]) * per_out
        else:
            counts[-1] += int(out.numel() // out.shape[0] // out.shape[-1]) * mod.in_features * \
                mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.segments.modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        with torch.no_grad():
            for seg in model.segments:
                counts.append(0)
                x = seg(x)
    finally:
        for h in handles:
            h.remove()
    return counts


def _cumulative_fractions(costs: list[int]) -> list[float]:
    total, run, out = float(sum(costs)), 0.0, []
    for c in costs:
        run += c
        out.append(round(run / total, 6))
    return out
