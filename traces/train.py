"""Train the multi-exit backbones with EENet's loss, on CPU, and write checkpoints atomically.

Loss (EENet, ``reference/eenet.md``): ``sum_j (j+1) * CE_j / (K(K+1)/2)``; from 75% of the epochs
on, plus late self-distillation ``0.01 * T^2 * sum_j KL(softmax(z_K/T) || softmax(z_j/T))``, T = 3,
with the last exit's output as a fixed (detached) teacher.

- ``fmnist-resnet``: the whole CNN is trained (SGD, Nesterov, cosine schedule, random 2-pixel
  shifts and horizontal flips).
- ``rt-minilm6``: the bottom ``6 - tune_layers`` transformer layers stay frozen at the published
  all-MiniLM-L6-v2 weights. Their per-exit pooled features (and the hidden states entering the
  first tuned layer) are computed once and cached; the heads of the frozen exits train on the
  cached features, and the top ``tune_layers`` layers are fine-tuned together with their heads.
  ``tune_layers=0`` trains heads only, on a fully frozen backbone.

A checkpoint is a dict saved with ``torch.save`` (load with ``weights_only=True``): model id and
constructor config, the state dict (for MiniLM only the trained parameters: heads and tuned
layers) and how it was produced.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from offramp.common.errors import InputError
from offramp.common.machine import command_line

from .checkpoint import save_checkpoint
from .datasets import Dataset, load_dataset
from .models import DATASETS_OF, FmnistResNet, MultiExitNet, images_to_tensor
from .train_minilm import train_minilm
from .training import (
    DEFAULT_EPOCHS,
    distill_starts,
    multi_exit_loss,
    produced_by,
    progress_bar,
    seed_everything,
    set_threads,
)


def _shift_flip(x: Tensor, gen: torch.Generator, pad: int = 2) -> Tensor:
    """Random translation by up to ``pad`` pixels and random horizontal flip, per image."""
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), value=float(x.min()))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    out = xp[torch.arange(b)[:, None, None], 0, rows, cols].unsqueeze(1)
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


@torch.no_grad()
def _cnn_accuracy(model: MultiExitNet, x: Tensor, y: Tensor, batch_size: int = 500) -> list[float]:
    model.eval()
    correct = torch.zeros(model.n_exits)
    for i in range(0, len(y), batch_size):
        xb = x[i:i + batch_size].contiguous(memory_format=torch.channels_last)
        for k, z in enumerate(model.forward_exits(xb)):
            correct[k] += (z.argmax(1) == y[i:i + batch_size]).sum()
    return (correct / len(y)).tolist()


def train_fmnist(data: Dataset, epochs: int = DEFAULT_EPOCHS["fmnist-resnet"], seed: int = 0,
                 batch_size: int = 128, lr: float = 0.1, weight_decay: float = 5e-4,
                 progress: bool = True, **model_kwargs: Any) -> tuple[FmnistResNet, dict[str, Any]]:
    """Train the multi-exit CNN on ``data.train``; report per-exit val accuracy per epoch."""
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    model = FmnistResNet(num_classes=len(data.classes), **model_kwargs)
    model = model.to(memory_format=torch.channels_last)
    x, y = images_to_tensor(data.train.x), torch.as_tensor(data.train.y)
    aug_rng = np.random.default_rng([seed, 1])
    xv, yv = images_to_tensor(data.val.x), torch.as_tensor(data.val.y)
    steps = epochs * int(np.ceil(len(y) / batch_size))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    history: list[dict[str, Any]] = []
    with progress_bar(progress) as bar:
        task = bar.add_task(f"fmnist-resnet on {data.name}", total=steps)
        for epoch in range(epochs):
            model.train()
            distill = epoch >= distill_starts(epochs)
            if data.augment is not None:
                x = images_to_tensor(data.augment(data.train.x, aug_rng))
            perm = torch.randperm(len(y), generator=gen)
            total = 0.0
            for idx in perm.split(batch_size):
                xb = _shift_flip(x[idx], gen).contiguous(memory_format=torch.channels_last)
                loss = multi_exit_loss(model.forward_exits(xb), y[idx], distill)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                bar.advance(task)
            acc = _cnn_accuracy(model, xv, yv)
            history.append({"epoch": epoch + 1, "loss": total / len(y), "distill": distill,
                            "val_accuracy": [round(a, 4) for a in acc]})
            bar.console.print(f"epoch {epoch + 1}/{epochs} loss {total / len(y):.4f} "
                            f"val acc per exit {[round(a, 4) for a in acc]}")
    model = model.to(memory_format=torch.contiguous_format).eval()
    return model, {"history": history, "batch_size": batch_size, "lr": lr,
                   "weight_decay": weight_decay, "optimizer": "SGD nesterov, one-cycle"}


def load_data(model_id: str, data_path: str | Path | None = None,
              dataset: str | None = None) -> Dataset:
    """The dataset a model id is trained and recorded on (``dataset``: another one it takes,
    e.g. ``fashion-mnist-c`` for ``fmnist-resnet``; default its first)."""
    if model_id not in DATASETS_OF:
        raise InputError(None, "model", f"unknown model {model_id!r}",
                         f"use one of {sorted(DATASETS_OF)}")
    names = DATASETS_OF[model_id]
    if dataset is not None and dataset not in names:
        raise InputError(None, "dataset", f"{model_id} is not trained on {dataset!r}",
                         f"use one of {list(names)}")
    return load_dataset(dataset or names[0], data_path)


def train(model_id: str, out: str | Path, epochs: int | None = None, seed: int = 0,
          data: Dataset | None = None, data_path: str | Path | None = None,
          threads: int | None = None, progress: bool = True, command: str | None = None,
          dataset: str | None = None, **kwargs: Any) -> tuple[MultiExitNet, dict[str, Any]]:
    """Train ``model_id`` on its dataset (or ``dataset``) and write its checkpoint to ``out``;
    return the model and the run info."""
    set_threads(threads)
    data = data if data is not None else load_data(model_id, data_path, dataset)
    epochs = epochs if epochs is not None else DEFAULT_EPOCHS.get(model_id, 1)
    if epochs < 1:
        raise InputError(None, "epochs", f"must be >= 1, got {epochs}", "pass --epochs 1 or more")
    t0 = time.perf_counter()
    if model_id == "fmnist-resnet":
        model, info = train_fmnist(data, epochs=epochs, seed=seed, progress=progress, **kwargs)
    elif model_id == "rt-minilm6":
        model, info = train_minilm(data, epochs=epochs, seed=seed, progress=progress, **kwargs)
    else:
        raise InputError(None, "model", f"unknown model {model_id!r}", "use fmnist-resnet or rt-minilm6")
    wall = round(time.perf_counter() - t0, 1)
    info = {"train": {**info, "epochs": epochs, "seed": seed, "wall_seconds": wall,
                      "dataset": data.name,
                      "train_samples": len(data.train), "val_samples": len(data.val)},
            "produced_by": produced_by(command or command_line(), seed)}
    save_checkpoint(model, out, info, trainable_only=model_id == "rt-minilm6")
    return model, info
