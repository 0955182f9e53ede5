"""Checkpoints: a dict saved with ``torch.save`` (load with ``weights_only=True``): model id and
constructor config, the state dict (for MiniLM only the trained parameters: heads and tuned
layers) and how it was produced; written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from offramp.common.atomic import atomic_path
from offramp.common.errors import InputError

from .models import MultiExitNet, build_model

CKPT_FORMAT = "offramp-checkpoint"
CKPT_VERSION = 1


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
