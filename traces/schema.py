"""The exit-trace schema: the splits, the required metadata, the model-id rule, and the checks
:func:`offramp.traces.format.validate_trace` runs, in order (metadata, arrays, exits, the stored
softmax), each raising ``bad(field, problem)`` on the first problem.

The metadata that describes the arrays, and where each is checked: ``num_classes``,
``full_model_accuracy``, ``model_id``, ``dataset``, ``produced_by``, ``synthetic``,
``class_names``, ``entropy_recorded``, ``exit_position_unit`` (:func:`check_meta`);
``exit_names``, ``exit_positions``, ``split_sizes`` and the accuracy's agreement with the last
exit (:func:`check_exits`). ``class_names``, ``entropy_recorded``, ``exit_position_unit`` and
``split_sizes`` are optional; where present they must agree. (Load adds nothing else the arrays
could contradict; ``corruptions`` describes the data set, not the arrays.)"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from offramp.common.errors import InputError

if TYPE_CHECKING:
    from .format import ExitTrace

Bad = Callable[[str, str], InputError]

SPLITS = ("val", "test")
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
REQUIRED_META = ("model_id", "dataset", "exit_names", "exit_positions", "full_model_accuracy",
                 "produced_by", "synthetic")


def has_entropy(t: ExitTrace) -> bool:
    """Whether the trace holds each exit's entropy (a trace imported from predictions and
    confidences alone does not: ``meta.entropy_recorded`` false, entropy NaN)."""
    return t.meta.get("entropy_recorded", True) is not False


def check_meta(t: ExitTrace, bad: Bad) -> int:
    """The metadata's required keys and types; returns the number of classes."""
    if not isinstance(t.meta, dict):
        raise bad("meta", f"must be a mapping of metadata, got a {type(t.meta).__name__}")
    for key in REQUIRED_META + ("num_classes",):
        if key not in t.meta:
            raise bad(f"meta.{key}", "missing")
    c = t.meta["num_classes"]
    if not isinstance(c, int) or isinstance(c, bool) or c < 2:
        raise bad("meta.num_classes", f"must be an integer >= 2, got {c!r}")
    acc_meta = t.meta["full_model_accuracy"]
    if (not isinstance(acc_meta, (int, float)) or isinstance(acc_meta, bool)
            or not (np.isnan(acc_meta) or 0 <= acc_meta <= 1)):
        raise bad("meta.full_model_accuracy", f"must be a number in [0, 1], got {acc_meta!r}")
    for key in ("model_id", "dataset"):
        if not isinstance(t.meta[key], str) or not t.meta[key]:
            raise bad(f"meta.{key}", f"must be a non-empty string, got {t.meta[key]!r}")
    if not MODEL_ID.fullmatch(t.meta["model_id"]):
        raise bad("meta.model_id", f"must be a name of letters, digits, '.', '_' and '-', got "
                  f"{t.meta['model_id']!r} (it names files)")
    if not isinstance(t.meta["produced_by"], dict):
        raise bad("meta.produced_by", f"must be a mapping, got {t.meta['produced_by']!r}")
    check_descriptions(t, c, bad)
    return c


def check_descriptions(t: ExitTrace, c: int, bad: Bad) -> None:
    """The flags and names that describe the arrays: ``synthetic`` and (where present)
    ``entropy_recorded`` are true or false, ``class_names`` names each of the C classes,
    ``exit_position_unit`` is a non-empty string."""
    for key in ("synthetic", "entropy_recorded"):
        if key in t.meta and not isinstance(t.meta[key], bool):
            raise bad(f"meta.{key}", f"must be true or false, got {t.meta[key]!r}")
    names = t.meta.get("class_names")
    if "class_names" in t.meta and (not isinstance(names, list) or len(names) != c
                                    or not all(isinstance(x, str) for x in names)):
        got = f"{len(names)} names" if isinstance(names, list) else repr(names)
        raise bad("meta.class_names", f"must list {c} names (meta.num_classes), one per class, "
                  f"got {got}")
    unit = t.meta.get("exit_position_unit")
    if "exit_position_unit" in t.meta and (not isinstance(unit, str) or not unit):
        raise bad("meta.exit_position_unit", f"must be a non-empty string, got {unit!r}")


def check_arrays(t: ExitTrace, c: int, bad: Bad
                  ) -> tuple[int, int]:
    """Every array's type, shape, dtype and range; returns (samples, exits)."""
    for name in ("labels", "split", "pred", "maxprob", "entropy", "correct"):
        if not isinstance(getattr(t, name), np.ndarray):
            raise bad(name, "must be an array")
    if t.labels.ndim != 1:
        raise bad("labels", f"must be 1-D, got shape {t.labels.shape}")
    n = t.labels.shape[0]
    if n == 0:
        raise bad("labels", "trace has no samples")
    if t.pred.ndim != 2 or t.pred.shape[0] != n:
        raise bad("pred", f"must have shape (N={n}, K), got {t.pred.shape}")
    k = t.pred.shape[1]
    if k < 1:
        raise bad("pred", "trace has no exits")
    for name in ("maxprob", "entropy", "correct"):
        if getattr(t, name).shape != (n, k):
            raise bad(name, f"must have shape {(n, k)}, got {getattr(t, name).shape}")
    if t.split.shape != (n,):
        raise bad("split", f"must have shape ({n},), got {t.split.shape}")
    for name in ("labels", "pred", "split"):
        if not np.issubdtype(getattr(t, name).dtype, np.integer):
            raise bad(name, f"must be integer, got {getattr(t, name).dtype}")
    for name in ("maxprob", "entropy"):
        if not np.issubdtype(getattr(t, name).dtype, np.floating):
            raise bad(name, f"must be float, got {getattr(t, name).dtype}")
    if t.correct.dtype != np.bool_:
        raise bad("correct", f"must be bool, got {t.correct.dtype}")
    if t.split.min() < 0 or t.split.max() >= len(SPLITS):
        raise bad("split", f"values must be 0 (val) or 1 (test), got {sorted(set(t.split.tolist()))[:5]}")
    for name in ("labels", "pred"):
        arr = getattr(t, name)
        if arr.min() < 0 or arr.max() >= c:
            raise bad(name, f"class ids must be in [0, {c}), got [{arr.min()}, {arr.max()}]")
    if not np.isfinite(t.maxprob).all() or t.maxprob.min() < 1.0 / c - 1e-3 or t.maxprob.max() > 1 + 1e-3:
        raise bad("maxprob", f"must be in [1/C, 1] = [{1 / c:.3f}, 1]")
    if not has_entropy(t):
        if not np.isnan(t.entropy).all():
            raise bad("entropy", "must be all NaN when meta.entropy_recorded is false")
    elif not np.isfinite(t.entropy).all() or t.entropy.min() < -1e-6 or t.entropy.max() > 1 + 1e-6:
        raise bad("entropy", "normalised entropy must be in [0, 1]")
    if not np.array_equal(t.correct, t.pred == t.labels[:, None]):
        raise bad("correct", "does not equal (pred == label)")
    return n, k


def check_exits(t: ExitTrace, k: int, bad: Bad) -> None:
    """The metadata checked against the arrays: the exits' names and positions, the split
    sizes, and the recorded full-model accuracy."""
    names, positions = t.meta["exit_names"], t.meta["exit_positions"]
    if not isinstance(names, list) or len(names) != k or not all(isinstance(x, str) for x in names):
        raise bad("meta.exit_names", f"must list {k} names, one per exit")
    if (not isinstance(positions, list) or len(positions) != k
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in positions)):
        raise bad("meta.exit_positions", f"must list {k} positions (numbers), one per exit")
    if not all(math.isfinite(x) and x >= 0 for x in positions):
        raise bad("meta.exit_positions", f"must be finite numbers >= 0, got {positions}")
    if any(b <= a for a, b in zip(positions, positions[1:], strict=False)):
        raise bad("meta.exit_positions", f"must increase, got {positions}")
    check_split_sizes(t, bad)
    test = t.split == SPLITS.index("test")
    if test.any():
        acc = float(t.correct[test, -1].mean())
        if abs(acc - float(t.meta["full_model_accuracy"])) > 1e-6:
            raise bad("meta.full_model_accuracy",
                      f"says {t.meta['full_model_accuracy']} but the last exit's test accuracy is {acc}")


def check_split_sizes(t: ExitTrace, bad: Bad) -> None:
    """``meta.split_sizes``, where present: each split's sample count, as ``split`` holds it (a
    split without samples may be left out)."""
    if "split_sizes" not in t.meta:
        return
    sizes = t.meta["split_sizes"]
    counts = {name: int((t.split == i).sum()) for i, name in enumerate(SPLITS)}
    if (not isinstance(sizes, dict) or not set(sizes) <= set(SPLITS)
            or any(isinstance(v, bool) or not isinstance(v, int) for v in sizes.values())
            or any(sizes.get(name, 0) != n for name, n in counts.items())):
        raise bad("meta.split_sizes", f"must give each split's sample count as the split array "
                  f"holds them, {counts}, got {sizes!r}")


def check_softmax(t: ExitTrace, n: int, k: int, c: int,
                   bad: Bad) -> None:
    """The stored softmax: shape, probability rows, and agreement with pred, maxprob, entropy."""
    sm = t.softmax
    if sm.shape != (n, k, c):
        raise bad("softmax", f"must have shape {(n, k, c)}, got {sm.shape}")
    if not np.issubdtype(sm.dtype, np.floating):
        raise bad("softmax", f"must be float, got {sm.dtype}")
    s = sm.astype(np.float32)
    if not np.isfinite(s).all() or s.min() < 0 or np.abs(s.sum(axis=2) - 1).max() > 1e-2:
        raise bad("softmax", "rows must be probability vectors (non-negative, sum to 1)")
    if np.abs(s.max(axis=2) - t.maxprob).max() > 1e-2:
        raise bad("softmax", "max of the softmax does not match maxprob")
    # pred must be an argmax of the softmax (ties within float16 rounding allowed).
    at_pred = np.take_along_axis(s, t.pred[:, :, None].astype(np.int64), axis=2)[:, :, 0]
    off = (s.max(axis=2) - at_pred) > 2e-3
    if off.any():
        i, j = np.argwhere(off)[0]
        raise bad("pred", f"is not the argmax of the softmax ({int(off.sum())} entries, "
                  f"first: sample {i}, exit {j})")
    p = np.clip(s.astype(np.float64), 1e-12, 1.0)
    ent = -(s * np.log(p)).sum(axis=2) / np.log(c)
    gap = np.abs(ent - t.entropy)
    if gap.max() > 2e-2:
        i, j = np.unravel_index(int(gap.argmax()), gap.shape)
        raise bad("entropy", f"disagrees with the softmax's normalised entropy (sample {i}, "
                  f"exit {j}: {float(t.entropy[i, j]):.3f} vs {float(ent[i, j]):.3f})")


def entropy_bounds(p: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """The least and most normalised entropy a C-class distribution whose largest probability
    is ``p`` can have: the rest packed into as few classes as it fits (each at most p), or
    spread evenly over the other C-1."""
    p = np.clip(np.asarray(p, dtype=float), 1.0 / c, 1.0)

    def h(x):
        return np.where(x > 0, -x * np.log(np.maximum(x, 1e-300)), 0.0)

    m = np.floor(1.0 / p + 1e-9)  # classes that can hold p each
    low = (m * h(p) + h(np.clip(1.0 - m * p, 0.0, 1.0))) / np.log(c)
    high = (h(p) + (c - 1) * h((1.0 - p) / (c - 1))) / np.log(c)
    return low, high


def check_entropy_bounds(t: ExitTrace, c: int, bad: Bad, tol: float = 2e-2) -> None:
    """Without the softmax, each exit's entropy must still be one its maxprob allows."""
    low, high = entropy_bounds(t.maxprob, c)
    off = (t.entropy < low - tol) | (t.entropy > high + tol)
    if off.any():
        i, j = np.argwhere(off)[0]
        raise bad("entropy", f"{int(off.sum())} entries no distribution with their maxprob has "
                  f"(first: sample {i}, exit {j}: maxprob {float(t.maxprob[i, j]):.3f} allows "
                  f"entropy {float(low[i, j]):.3f}..{float(high[i, j]):.3f}, got "
                  f"{float(t.entropy[i, j]):.3f})")
