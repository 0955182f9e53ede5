"""Record an exit trace: run a trained multi-exit model over the val and test splits.

Every exit's softmax is computed for every sample (no early exiting here), so the trace holds
what each exit would have answered; policies and the simulator decide later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from offramp.common.errors import InputError
from offramp.common.machine import command_line

from .checkpoint import load_checkpoint
from .datasets import Dataset, Split
from .format import SPLITS, ExitTrace, make_trace, save_trace
from .models import FmnistResNet, MiniLMExits, MultiExitNet, images_to_tensor
from .train import load_data
from .train_minilm import length_buckets
from .training import produced_by, set_threads


@torch.no_grad()
def exit_softmax(model: MultiExitNet, split: Split, batch_size: int = 256) -> np.ndarray:
    """Per-exit softmax (N, K, C) of ``model`` on one split, in the split's sample order."""
    model.eval()
    n = len(split)
    out = np.zeros((n, model.n_exits, model.num_classes), dtype=np.float64)
    if isinstance(model, MiniLMExits):
        batches = length_buckets(model, split.x, batch_size)
    else:
        batches = [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    for idx in batches:
        if isinstance(model, MiniLMExits):
            x: Any = model.tokenize([split.x[i] for i in idx])
        elif isinstance(model, FmnistResNet):
            x = images_to_tensor(split.x[idx])
        else:
            x = torch.as_tensor(split.x[idx])
        logits = torch.stack(model.forward_exits(x), dim=1).double()
        out[idx] = torch.softmax(logits, dim=2).numpy()
    return out


def record_trace(model: MultiExitNet, data: Dataset, splits: tuple[str, ...] = SPLITS,
                 batch_size: int = 256, keep_softmax: bool = True,
                 meta_extra: dict[str, Any] | None = None) -> ExitTrace:
    """Build a validated trace of ``model`` on the ``val`` and ``test`` splits of ``data``."""
    labels, split_ids, probs = [], [], []
    for name in splits:
        part = data.split(name)
        probs.append(exit_softmax(model, part, batch_size))
        labels.append(np.asarray(part.y))
        split_ids.append(np.full(len(part), SPLITS.index(name), dtype=np.uint8))
    meta = {
        "model_id": model.model_id, "dataset": data.name, "class_names": list(data.classes),
        "exit_names": list(model.exit_names), "exit_positions": list(model.exit_positions),
        "exit_position_unit": "cumulative fraction of backbone multiply-accumulates",
        "split_sizes": {name: len(data.split(name)) for name in splits},
        "synthetic": False, **(meta_extra or {}),
    }
    meta.setdefault("produced_by", {})
    return make_trace(np.concatenate(labels), np.concatenate(split_ids),
                      np.concatenate(probs), meta, keep_softmax=keep_softmax)


def record(checkpoint: str | Path, out: str | Path, model_id: str | None = None,
           data_path: str | Path | None = None, batch_size: int = 256,
           threads: int | None = None, command: str | None = None,
           dataset: str | None = None) -> ExitTrace:
    """Load ``checkpoint``, record its trace on the dataset it was trained on (or ``dataset``)
    and save it to ``out``."""
    set_threads(threads)
    model, ckpt = load_checkpoint(checkpoint)
    if model_id is not None and model_id != model.model_id:
        raise InputError(checkpoint, "model_id", f"checkpoint holds {model.model_id!r}, "
                         f"not {model_id!r}", f"pass --model {model.model_id}")
    data = load_data(model.model_id, data_path, dataset or ckpt.get("train", {}).get("dataset"))
    seed = int(ckpt.get("train", {}).get("seed", 0))
    prov = produced_by(command or command_line(), seed, checkpoint=Path(checkpoint).name,
                       training=ckpt.get("produced_by", {}),
                       train_wall_seconds=ckpt.get("train", {}).get("wall_seconds"))
    trace = record_trace(model, data, batch_size=batch_size,
                         meta_extra={**data.meta, "produced_by": prov})
    save_trace(trace, out)
    return trace
