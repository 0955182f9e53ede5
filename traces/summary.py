"""What an exit trace says, per split: accuracy and agreement per exit, oracle depth."""

from __future__ import annotations

from typing import Any

import numpy as np

from .format import SPLITS, ExitTrace


def oracle_exit(trace: ExitTrace, idx: np.ndarray) -> np.ndarray:
    """Per sample: the earliest correct exit, or the last exit if none is correct."""
    correct = trace.correct[idx]
    return np.where(correct.any(axis=1), correct.argmax(axis=1), trace.n_exits - 1)


def summarize(trace: ExitTrace) -> dict[str, Any]:
    """Per split: per-exit accuracy and agreement with the last exit, first-exit-correct fraction,
    the oracle's average depth; plus sample counts and metadata."""
    k = trace.n_exits
    positions = np.asarray(trace.meta["exit_positions"], dtype=float)
    splits = {}
    for name in SPLITS:
        idx = trace.indices(name)
        if len(idx) == 0:
            continue
        depth = oracle_exit(trace, idx)
        splits[name] = {
            "samples": int(len(idx)),
            "accuracy": [round(float(a), 4) for a in trace.correct[idx].mean(axis=0)],
            "agreement_with_last": [round(float(a), 4) for a in trace.agree[idx].mean(axis=0)],
            "first_exit_correct": round(float(trace.correct[idx, 0].mean()), 4),
            "any_exit_correct": round(float(trace.correct[idx].any(axis=1).mean()), 4),
            "oracle_mean_exit_index": round(float(depth.mean()), 4),
            "oracle_mean_depth_fraction": round(float(((depth + 1) / k).mean()), 4),
            "oracle_mean_position": round(float(positions[depth].mean()), 4),
            "mean_maxprob": [round(float(a), 4) for a in trace.maxprob[idx].mean(axis=0)],
        }
    return {"source": trace.source, "model_id": trace.model_id, "dataset": trace.meta["dataset"],
            "samples": trace.n_samples, "exits": k, "classes": trace.n_classes,
            "exit_names": trace.meta["exit_names"], "exit_positions": trace.meta["exit_positions"],
            "full_model_accuracy": trace.meta["full_model_accuracy"], "splits": splits,
            "meta": trace.meta}
