"""Synthetic exit traces, for unit tests only (labelled ``synthetic`` in their metadata)."""

from __future__ import annotations

import numpy as np

from .format import SPLITS, ExitTrace, make_trace


def synthetic_trace(n_samples: int = 2000, n_exits: int = 4, n_classes: int = 10,
                    val_fraction: float = 0.5, seed: int = 0,
                    model_id: str = "synthetic-net") -> ExitTrace:
    """A trace whose later exits are more confident and more accurate, like a real one.

    Per sample a latent difficulty d ~ U(0, 1); exit k's logit margin on the true class grows
    with depth and shrinks with difficulty. Not real data: tests only.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_samples)
    difficulty = rng.random(n_samples)
    depth = (np.arange(n_exits) + 1) / n_exits
    logits = rng.normal(0.0, 1.0, (n_samples, n_exits, n_classes))
    margin = 6.0 * depth[None, :] * (1.2 - difficulty[:, None]) + 0.3
    logits[np.arange(n_samples), :, labels] += margin
    z = logits - logits.max(axis=2, keepdims=True)
    softmax = np.exp(z) / np.exp(z).sum(axis=2, keepdims=True)
    split = np.where(rng.random(n_samples) < val_fraction, SPLITS.index("val"), SPLITS.index("test"))
    meta = {
        "model_id": model_id, "dataset": "synthetic",
        "exit_names": [f"exit{k}" for k in range(n_exits)],
        "exit_positions": [float(x) for x in depth],
        "produced_by": {"command": f"synthetic_trace(seed={seed})"}, "synthetic": True,
    }
    return make_trace(labels, split, softmax, meta)
