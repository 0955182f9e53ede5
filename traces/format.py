"""The exit-trace format: per sample and per exit, what a multi-exit model predicted.

One compressed ``.npz`` per (model, dataset), versioned and self-describing. Sample ``i`` of the
trace is row ``i`` of every array. ``split`` says whether a sample is for fitting policies
(``val``) or evaluating them (``test``); never fit on test.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from offramp.common.atomic import atomic_path
from offramp.common.errors import InputError

FORMAT = "offramp-trace"
VERSION = 1
SPLITS = ("val", "test")
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
REQUIRED_META = ("model_id", "dataset", "exit_names", "exit_positions", "full_model_accuracy",
                 "produced_by", "synthetic")


@dataclass(frozen=True, eq=False)
class ExitTrace:
    """Recorded exit behaviour of one model on one dataset (N samples, K exits, C classes)."""

    labels: np.ndarray  # (N,) int
    split: np.ndarray  # (N,) uint8, index into SPLITS
    pred: np.ndarray  # (N, K) int
    maxprob: np.ndarray  # (N, K) float32
    entropy: np.ndarray  # (N, K) float32, H / log C in [0, 1]
    correct: np.ndarray  # (N, K) bool
    meta: dict[str, Any]
    softmax: np.ndarray | None = None  # (N, K, C) float16 where C is small
    source: str | None = field(default=None)

    @property
    def n_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_exits(self) -> int:
        return int(self.pred.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def model_id(self) -> str:
        return str(self.meta["model_id"])

    @property
    def agree(self) -> np.ndarray:
        """(N, K) bool: the exit's prediction equals the full model's (last exit)."""
        return self.pred == self.pred[:, -1:]

    def indices(self, split: str) -> np.ndarray:
        """Sample ids of one split (``val`` or ``test``)."""
        if split not in SPLITS:
            raise InputError(self.source, "split", f"unknown split {split!r}", f"use one of {SPLITS}")
        return np.flatnonzero(self.split == SPLITS.index(split))

    def accuracy(self, split: str = "test") -> np.ndarray:
        """(K,) accuracy of each exit on a split."""
        return self.correct[self.indices(split)].mean(axis=0)


def make_trace(labels: np.ndarray, split: np.ndarray, softmax: np.ndarray, meta: dict[str, Any],
               keep_softmax: bool = True) -> ExitTrace:
    """Build a validated trace from per-exit softmax outputs (N, K, C).

    ``meta`` needs everything in ``REQUIRED_META`` except ``full_model_accuracy`` and
    ``num_classes``, which are computed here.
    """
    softmax = np.asarray(softmax, dtype=np.float64)
    n, k, c = softmax.shape
    labels = np.asarray(labels, dtype=np.int64)
    pred = softmax.argmax(axis=2)
    maxprob = softmax.max(axis=2)
    p = np.clip(softmax, 1e-12, 1.0)
    entropy = -(softmax * np.log(p)).sum(axis=2) / np.log(c)
    correct = pred == labels[:, None]
    split = np.asarray(split, dtype=np.uint8)
    test = split == SPLITS.index("test")
    full_acc = float(correct[test, -1].mean()) if test.any() else float("nan")
    meta = {**meta, "num_classes": c, "full_model_accuracy": full_acc}
    trace = ExitTrace(
        labels=labels, split=split, pred=pred.astype(np.int32),
        maxprob=maxprob.astype(np.float32), entropy=np.clip(entropy, 0, 1).astype(np.float32),
        correct=correct, meta=meta, softmax=softmax.astype(np.float16) if keep_softmax else None,
    )
    validate_trace(trace)
    return trace


def save_trace(trace: ExitTrace, path: str | Path) -> Path:
    """Validate, then write the trace atomically as a compressed ``.npz``."""
    validate_trace(trace)
    path = Path(path)
    header = {"format": FORMAT, "version": VERSION, **trace.meta}
    arrays = {
        "labels": trace.labels, "split": trace.split, "pred": trace.pred,
        "maxprob": trace.maxprob, "entropy": trace.entropy, "correct": trace.correct,
        "meta": np.array(json.dumps(header, sort_keys=True)),
    }
    if trace.softmax is not None:
        arrays["softmax"] = trace.softmax
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path


def load_trace(path: str | Path) -> ExitTrace:
    """Load and validate a trace; raise :class:`InputError` naming what is wrong."""
    path = Path(path)
    src = str(path)
    if not path.exists():
        raise InputError(src, None, "no such trace file",
                         "check the path, or run `offramp traces list` for the shipped traces")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InputError(src, None, f"not a readable offramp trace ({exc})",
                         "re-record it with `offramp traces record`") from None
    for name in ("labels", "split", "pred", "maxprob", "entropy", "correct", "meta"):
        if name not in data:
            raise InputError(src, name, "array missing", "re-record it with `offramp traces record`")
    try:
        header = json.loads(str(data["meta"]))
    except json.JSONDecodeError as exc:
        raise InputError(src, "meta", f"metadata is not JSON ({exc})", "re-record the trace") from None
    if not isinstance(header, dict):
        raise InputError(src, "meta", f"must be a mapping of metadata, got a "
                         f"{type(header).__name__}", "re-record the trace") from None
    if header.pop("format", None) != FORMAT:
        raise InputError(src, "meta.format", f"not an {FORMAT} file", "pass an offramp trace (.npz)")
    version = header.pop("version", None)
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(src, "meta.version", f"must be a whole number, got {version!r}",
                         "re-record the trace with this offramp")
    if version != VERSION:
        raise InputError(src, "meta.version", f"version {version} is not supported (this offramp "
                         f"reads version {VERSION})", "re-record the trace with this offramp")
    trace = ExitTrace(
        labels=data["labels"], split=data["split"], pred=data["pred"], maxprob=data["maxprob"],
        entropy=data["entropy"], correct=data["correct"], meta=header,
        softmax=data.get("softmax"), source=src,
    )
    validate_trace(trace)
    return trace


def require_splits(t: ExitTrace) -> None:
    """A trace a study uses needs both splits (policies fit on val and are judged on test) and
    a full model that is right somewhere in each (accuracy is kept relative to it)."""
    for split_name in SPLITS:
        ids = t.split == SPLITS.index(split_name)
        if not ids.any():
            raise InputError(t.source, "split", f"has no {split_name} samples (policies fit on "
                             "val and are judged on test; both need samples)",
                             "record the trace with both splits (offramp traces record)")
        if not t.correct[ids, -1].any():
            raise InputError(t.source, "correct", f"the full model (last exit) is right on no "
                             f"{split_name} sample, so accuracy relative to it is undefined",
                             "record the trace on more samples")


def has_entropy(t: ExitTrace) -> bool:
    """Whether the trace holds each exit's entropy (a trace imported from predictions and
    confidences alone does not: ``meta.entropy_recorded`` false, entropy NaN)."""
    return t.meta.get("entropy_recorded", True) is not False


def require_entropy(t: ExitTrace, who: str) -> None:
    """One error for a policy that needs the per-exit entropy on a trace without it."""
    if not has_entropy(t):
        raise InputError(t.source, "entropy", f"{who} needs each exit's entropy (or softmax); "
                         "this trace was imported from predictions and confidences only",
                         "use maxprob, patience, static or oracle, or import the softmax")


def validate_trace(t: ExitTrace) -> None:
    """Check shapes, dtypes, ranges and metadata; raise :class:`InputError` on the first problem."""
    src = t.source
    fix = "re-record the trace with `offramp traces record`"

    def bad(fieldname: str, problem: str) -> InputError:
        return InputError(src, fieldname, problem, fix)

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
    test = t.split == SPLITS.index("test")
    if test.any():
        acc = float(t.correct[test, -1].mean())
        if abs(acc - float(t.meta["full_model_accuracy"])) > 1e-6:
            raise bad("meta.full_model_accuracy",
                      f"says {t.meta['full_model_accuracy']} but the last exit's test accuracy is {acc}")
    if t.softmax is not None:
        sm = t.softmax
        if sm.shape != (n, k, c):
            raise bad("softmax", f"must have shape {(n, k, c)}, got {sm.shape}")
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
