"""The exit-trace format: per sample and per exit, what a multi-exit model predicted.

One compressed ``.npz`` per (model, dataset), versioned and self-describing. Sample ``i`` of the
trace is row ``i`` of every array. ``split`` says whether a sample is for fitting policies
(``val``) or evaluating them (``test``); never fit on test.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from offramp.common.atomic import atomic_path
from offramp.common.errors import InputError

from . import schema
from .schema import MODEL_ID, REQUIRED_META, SPLITS, has_entropy  # noqa: F401 (the format's names)

FORMAT = "offramp-trace"
VERSION = 1


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

    c = schema.check_meta(t, bad)
    n, k = schema.check_arrays(t, c, bad)
    schema.check_exits(t, k, bad)
    if t.softmax is not None:
        schema.check_softmax(t, n, k, c, bad)
    elif schema.has_entropy(t):
        schema.check_entropy_bounds(t, c, bad)
