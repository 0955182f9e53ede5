"""Train ``rt-minilm6``: the bottom ``6 - tune_layers`` transformer layers stay frozen at the
published all-MiniLM-L6-v2 weights; their per-exit pooled features (and the hidden states
entering the first tuned layer) are computed once and cached; the heads of the frozen exits
train on the cached features, and the top ``tune_layers`` layers are fine-tuned with their
heads (traces/train.py)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from offramp.common.errors import InputError

from .datasets import Dataset, Split
from .models import MiniLMExits
from .training import DEFAULT_EPOCHS, distill_starts, multi_exit_loss, progress_bar, seed_everything


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
        raise InputError("traces train", "--tune-layers", f"must be in [0, {model.n_exits}], "
                         f"got {tune_layers}", f"pass --tune-layers 0..{model.n_exits}")
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
    with progress_bar(progress) as bar:
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
