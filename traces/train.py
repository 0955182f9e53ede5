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

import datetime as _dt
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from offramp.common.atomic import atomic_path
from offramp.common.errors import InputError
from offramp.common.machine import command_line, cpu_name

from .datasets import Dataset, Split, load_fashion_mnist, load_rotten_tomatoes
from .models import FmnistResNet, MiniLMExits, MultiExitNet, build_model, images_to_tensor

CKPT_FORMAT = "offramp-checkpoint"
CKPT_VERSION = 1
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
def _progress(enabled: bool) -> Iterator[Any]:
    from .progress import rich_progress

    with rich_progress(disable=not enabled) as bar:
        yield bar


def save_checkpoint(model: MultiExitNet, path: str | Path, info: dict[str, Any],
                    trainable_only: bool = False) -> Path:
    """Write a checkpoint atomically; ``trainable_only`` keeps only parameters that train."""
    state = model.state_dict()
    if trainable_only:
        keep = {n for n, p in model.named_parameters() if p.requires_grad}
        keep |= {n for n, _ in model.named_buffers() if n.startswith("heads.")}
        state = {n: t for n, t in state.items() if n in keep}
    ckpt = {"format": CKPT_FORMAT, "version": CKPT_VERSION, "model_id": model.model_id,
            "config": dict(model.config), "scope": "trainable" if trainable_only else "full",
            "state_dict": {n: t.detach().clone().contiguous() for n, t in state.items()}, **info}
    path = Path(path)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(ckpt, tmp)
    return path


def load_checkpoint(path: str | Path) -> tuple[MultiExitNet, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as; return it (eval mode) and the checkpoint."""
    path = Path(path)
    fix = "train one with `offramp traces train --model ... -o CKPT`"
    if not path.is_file():
        raise InputError(path, None, "no such checkpoint", fix)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(path, None, f"not a readable checkpoint ({type(exc).__name__})", fix) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise InputError(path, "format", f"not an {CKPT_FORMAT} file", fix)
    model = build_model(ckpt["model_id"], **ckpt["config"])
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if ckpt["scope"] == "full" and missing:
        raise InputError(path, "state_dict", f"missing weights {missing[:3]}", fix)
    if unexpected:
        raise InputError(path, "state_dict", f"unexpected weights {unexpected[:3]}", fix)
    return model.eval(), ckpt


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
    xv, yv = images_to_tensor(data.val.x), torch.as_tensor(data.val.y)
    steps = epochs * int(np.ceil(len(y) / batch_size))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    history: list[dict[str, Any]] = []
    with _progress(progress) as bar:
        task = bar.add_task("fmnist-resnet", total=steps)
        for epoch in range(epochs):
            model.train()
            distill = epoch >= distill_starts(epochs)
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


def length_buckets(model: MiniLMExits, texts: list[str], batch_size: int) -> list[np.ndarray]:
    """Sample indices grouped by token length (sorted), so batches pad little."""
    lengths = np.array([len(ids) for ids in model.tokenizer(
        list(texts), truncation=True, max_length=model.max_length)["input_ids"]])
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def _cache_frozen(model: MiniLMExits, split: Split, n_frozen: int, batch_size: int,
                  keep_hidden: bool) -> list[dict[str, Tensor]]:
    """Run the frozen segments once: per bucket, pooled features per frozen exit and the
    activation entering the first tuned segment."""
    cache = []
    for idx in length_buckets(model, split.x, batch_size):
        ids, mask = model.tokenize([split.x[i] for i in idx])
        act: Any = (ids, mask)
        feats = []
        for k in range(n_frozen):
            act = model.segments[k](act)
            feats.append(model.heads[k].pool(act))
        entry = {"idx": torch.as_tensor(idx), "y": torch.as_tensor(split.y[idx]),
                 "feats": torch.stack(feats, 1) if feats else torch.empty(len(idx), 0)}
        if keep_hidden:
            entry["act"] = (ids, mask) if n_frozen == 0 else act
        cache.append(entry)
    return cache


def _minilm_logits(model: MiniLMExits, entry: dict[str, Any], n_frozen: int) -> list[Tensor]:
    out = [model.heads[k].classifier(entry["feats"][:, k]) for k in range(n_frozen)]
    act = entry.get("act")
    for k in range(n_frozen, model.n_exits):
        act = model.segments[k](act)
        out.append(model.heads[k](act))
    return out


@torch.no_grad()
def _minilm_accuracy(model: MiniLMExits, cache: list[dict[str, Any]], n_frozen: int) -> list[float]:
    model.eval()
    correct, n = torch.zeros(model.n_exits), 0
    for entry in cache:
        for k, z in enumerate(_minilm_logits(model, entry, n_frozen)):
            correct[k] += (z.argmax(1) == entry["y"]).sum()
        n += len(entry["y"])
    return (correct / n).tolist()


def train_minilm(data: Dataset, epochs: int = DEFAULT_EPOCHS["rt-minilm6"], seed: int = 0,
                 tune_layers: int = 2, batch_size: int = 32, lr: float = 5e-5,
                 head_lr: float = 1e-3, weight_decay: float = 0.01, progress: bool = True,
                 pretrained: bool = True, **model_kwargs: Any) -> tuple[MiniLMExits, dict[str, Any]]:
    """Train MiniLM's exit heads (and fine-tune its top ``tune_layers`` layers) on ``data.train``."""
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MiniLMExits(num_classes=len(data.classes), pretrained=pretrained, **model_kwargs)
    if not 0 <= tune_layers <= model.n_exits:
        raise InputError(None, "tune_layers", f"must be in [0, {model.n_exits}], got {tune_layers}",
                         "pass --tune-layers 0..6")
    n_frozen = model.n_exits - tune_layers
    model.requires_grad_(False)
    model.heads.requires_grad_(True)
    for k in range(n_frozen, model.n_exits):
        model.segments[k].requires_grad_(True)
    model.eval()
    t0 = time.perf_counter()
    train_cache = _cache_frozen(model, data.train, n_frozen, batch_size, tune_layers > 0)
    val_cache = _cache_frozen(model, data.val, n_frozen, 128, tune_layers > 0)
    cache_s = time.perf_counter() - t0
    groups = [{"params": list(model.heads.parameters()), "lr": head_lr}]
    tuned = [p for k in range(n_frozen, model.n_exits) for p in model.segments[k].parameters()]
    if tuned:
        groups.append({"params": tuned, "lr": lr})
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    steps = epochs * len(train_cache)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / max(1, steps)))
    history: list[dict[str, Any]] = []
    with _progress(progress) as bar:
        task = bar.add_task("rt-minilm6", total=steps)
        for epoch in range(epochs):
            model.heads.train()
            for k in range(n_frozen, model.n_exits):
                model.segments[k].train()
            distill = epoch >= distill_starts(epochs)
            total, n = 0.0, 0
            for b in torch.randperm(len(train_cache), generator=gen).tolist():
                entry = train_cache[b]
                loss = multi_exit_loss(_minilm_logits(model, entry, n_frozen), entry["y"], distill)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(entry["y"])
                n += len(entry["y"])
                bar.advance(task)
            acc = _minilm_accuracy(model, val_cache, n_frozen)
            history.append({"epoch": epoch + 1, "loss": total / n, "distill": distill,
                            "val_accuracy": [round(a, 4) for a in acc]})
            bar.console.print(f"epoch {epoch + 1}/{epochs} loss {total / n:.4f} "
                            f"val acc per exit {[round(a, 4) for a in acc]}")
    return model.eval(), {"history": history, "batch_size": batch_size, "lr": lr,
                          "head_lr": head_lr, "weight_decay": weight_decay, "optimizer": "AdamW",
                          "tune_layers": tune_layers, "frozen_layers": n_frozen,
                          "cache_seconds": round(cache_s, 1)}


def load_data(model_id: str, data_path: str | Path | None = None) -> Dataset:
    """The dataset a model id is trained and recorded on."""
    if model_id == "fmnist-resnet":
        return load_fashion_mnist(data_path)
    if model_id == "rt-minilm6":
        return load_rotten_tomatoes(data_path)
    raise InputError(None, "model", f"unknown model {model_id!r}", "use fmnist-resnet or rt-minilm6")


def train(model_id: str, out: str | Path, epochs: int | None = None, seed: int = 0,
          data: Dataset | None = None, data_path: str | Path | None = None,
          threads: int | None = None, progress: bool = True, command: str | None = None,
          **kwargs: Any) -> tuple[MultiExitNet, dict[str, Any]]:
    """Train ``model_id`` and write its checkpoint to ``out``; return the model and the run info."""
    set_threads(threads)
    data = data if data is not None else load_data(model_id, data_path)
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
                      "train_samples": len(data.train), "val_samples": len(data.val)},
            "produced_by": produced_by(command or command_line(), seed)}
    save_checkpoint(model, out, info, trainable_only=model_id == "rt-minilm6")
    return model, info
