"""What both backbones' training shares: threads and seeds, provenance, EENet's multi-exit loss
with late self-distillation (traces/train.py's docstring), and the progress bar."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from offramp.common.machine import cpu_name

DEFAULT_EPOCHS = {"fmnist-resnet": 15, "rt-minilm6": 4}
DISTILL_T = 3.0
DISTILL_WEIGHT = 0.01


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` intra-op threads (default: all cores, at most 8); return the number."""
    n = threads or max(1, min(8, os.cpu_count() or 1))
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch and return a numpy Generator for everything numpy draws."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def produced_by(command: str, seed: int, **extra: Any) -> dict[str, Any]:
    """Provenance record: command, seed, software versions, machine and date."""
    return {
        "command": command, "seed": seed, "torch": str(torch.__version__), "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "device": "cpu"},
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **extra,
    }


def distill_starts(epochs: int) -> int:
    """First epoch (0-based) with self-distillation: after 75% of the epochs."""
    return int(np.ceil(0.75 * epochs))


def multi_exit_loss(logits: list[Tensor], y: Tensor, distill: bool = False,
                    temperature: float = DISTILL_T, weight: float = DISTILL_WEIGHT) -> Tensor:
    """EENet's weighted multi-exit cross-entropy, plus late self-distillation when ``distill``."""
    k = len(logits)
    loss = sum((j + 1) * F.cross_entropy(z, y) for j, z in enumerate(logits)) / (k * (k + 1) / 2)
    if distill and k > 1:
        teacher = F.softmax(logits[-1].detach() / temperature, dim=1)
        kl = sum(F.kl_div(F.log_softmax(z / temperature, dim=1), teacher, reduction="batchmean")
                 for z in logits[:-1])
        loss = loss + weight * temperature ** 2 * kl
    return loss


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Any]:
    from .progress import rich_progress

    with rich_progress(disable=not enabled) as bar:
        yield bar
