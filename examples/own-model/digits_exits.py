"""A user's own multi-exit network, outside offramp: an MLP with three exits on the
handwritten-digits data set scikit-learn ships (real data, offline; 1797 8x8 images).

offramp needs only the protocol of ``offramp.traces.own``: ``segments`` and ``heads``
(``nn.ModuleList``s, one head per segment) and ``example_input(b)``. ``make_model`` trains the
network in a few seconds (deterministic for a seed); ``make_data`` gives the val and test
batches of (inputs, labels) that ``offramp traces record --data-factory`` records on.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

SPLIT_SEED = 0


def _splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train / val / test: 897 / 450 / 450 images, a fixed permutation."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    cut = {"train": order[:897], "val": order[897:1347], "test": order[1347:]}
    return {name: (x[idx], y[idx]) for name, idx in cut.items()}


class DigitsExits(nn.Module):
    """Three blocks of Linear + ReLU, an exit head after each; the first block is narrow, so
    its exit is cheap and less accurate (as in a real early-exit network)."""

    model_id = "digits-mlp"
    exit_names = ["block1", "block2", "block3"]
    exit_positions = [1, 2, 3]

    def __init__(self, width: int = 256, first: int = 6):
        super().__init__()
        self.segments = nn.ModuleList([
            nn.Sequential(nn.Linear(64, first), nn.ReLU()),
            nn.Sequential(nn.Linear(first, width), nn.ReLU()),
            nn.Sequential(nn.Linear(width, width), nn.ReLU())])
        self.heads = nn.ModuleList([nn.Linear(first, 10), nn.Linear(width, 10),
                                    nn.Linear(width, 10)])

    def example_input(self, b: int) -> torch.Tensor:
        return torch.rand(b, 64)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for seg, head in zip(self.segments, self.heads, strict=True):
            x = seg(x)
            out.append(head(x))
        return out


def make_model(seed: int = 0, epochs: int = 40, width: int = 256) -> DigitsExits:
    """Train the network on the train split: the sum of every exit's cross-entropy, Adam."""
    torch.manual_seed(seed)
    model = DigitsExits(width)
    x, y = (torch.from_numpy(a) for a in _splits()["train"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            loss = sum(nn.functional.cross_entropy(o, y[idx]) for o in model(x[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def make_data(batch: int = 128) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The val and test splits as batches of (inputs, labels)."""
    out = {}
    for name in ("val", "test"):
        x, y = (torch.from_numpy(a) for a in _splits()[name])
        out[name] = list(zip(x.split(batch), y.split(batch), strict=True))
    return out
