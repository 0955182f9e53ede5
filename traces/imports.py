"""Traces from what users already have: per-exit outputs of their own model, as arrays.

:func:`import_trace` turns per-exit logits or probabilities (N, K, C), labels (N,) and a split
(given, or drawn as a val fraction with a seed) into a validated, versioned
:class:`~offramp.traces.format.ExitTrace` carrying the provenance the user gives.
:func:`read_outputs` reads them from ``.npy`` / ``.npz`` / Parquet. Every inconsistency is one
:class:`InputError` naming the file and the field.
"""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from offramp.common.errors import InputError

from .format import SPLITS, ExitTrace, make_trace

KINDS = ("logits", "probs")
PROB_TOLERANCE = 1e-3


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=2, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=2, keepdims=True)


def split_by_fraction(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """A split array (0 = val, 1 = test): ``round(val_fraction * n)`` samples drawn as val
    with ``seed``, the rest test."""
    if not 0 < val_fraction < 1:
        raise InputError("--val-fraction", None, f"must be in (0, 1), got {val_fraction}",
                         "e.g. --val-fraction 0.5")
    n_val = int(round(val_fraction * n))
    if n_val < 1 or n_val > n - 1:
        raise InputError("--val-fraction", None, f"leaves an empty split of {n} samples",
                         "use more samples or a fraction nearer 0.5")
    split = np.ones(n, dtype=np.uint8)
    split[np.random.default_rng(seed).choice(n, n_val, replace=False)] = 0
    return split


def import_trace(outputs: np.ndarray, labels: np.ndarray, *, kind: str = "logits",
                 split: np.ndarray | Sequence[str] | None = None,
                 val_fraction: float | None = None, seed: int = 0, model_id: str,
                 dataset: str, exit_positions: Sequence[float] | None = None,
                 exit_names: Sequence[str] | None = None, source: str = "outputs",
                 provenance: dict[str, Any] | None = None,
                 keep_softmax: bool | None = None, synthetic: bool = False) -> ExitTrace:
    """A validated trace from per-exit ``outputs`` (N, K, C) of ``kind`` logits or probs.

    ``split``: per sample 0/1 or ``"val"``/``"test"``; else ``val_fraction`` and ``seed`` draw
    one. ``exit_positions`` (default 1..K) and ``exit_names`` (default exit0..) describe where
    the exits sit. ``keep_softmax`` (default: when C <= 100) stores the probabilities too.
    ``synthetic``: the outputs were not produced by a real model on real data (labelled so).
    """
    if kind not in KINDS:
        raise InputError(source, "kind", f"{kind!r} is not one of {KINDS}", "--kind logits|probs")
    probs = _probabilities(np.asarray(outputs), kind, source)
    n, k, c = probs.shape
    lab = _labels(np.asarray(labels), n, c, source)
    sp = choose_split(split, val_fraction, seed, n, source)
    positions, names = exit_layout(exit_positions, exit_names, k, source)
    prov = {"command": "import_trace", "imported_from": source, "kind": kind,
            "split": "given" if split is not None else {"val_fraction": val_fraction,
                                                         "seed": seed},
            "python": platform.python_version(), "numpy": np.__version__,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **(provenance or {})}
    meta = {"model_id": model_id, "dataset": dataset, "exit_names": names,
            "exit_positions": positions, "produced_by": prov, "synthetic": bool(synthetic)}
    keep = c <= 100 if keep_softmax is None else keep_softmax
    trace = make_trace(lab, sp, probs, meta, keep_softmax=keep)
    require_both_splits(trace, source)
    return trace


def _probabilities(out: np.ndarray, kind: str, source: str) -> np.ndarray:
    """(N, K, C) probabilities from checked logits or probabilities."""
    if out.ndim != 3 or min(out.shape) < 1:
        raise InputError(source, "outputs", f"must have shape (N samples, K exits, C classes), "
                         f"got {out.shape}", "stack each exit's outputs along axis 1")
    if not np.issubdtype(out.dtype, np.number) or np.issubdtype(out.dtype, np.complexfloating):
        raise InputError(source, "outputs", f"must be real numbers, got {out.dtype}",
                         "save the outputs as float arrays")
    c = out.shape[2]
    if c < 2:
        raise InputError(source, "outputs", f"has {c} class, needs at least 2",
                         "store every class's logit or probability")
    out = out.astype(np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        i, j, m = np.argwhere(bad)[0]
        raise InputError(source, "outputs", f"{int(bad.sum())} values are NaN or infinite "
                         f"(first: sample {i}, exit {j}, class {m})", "fix the model outputs")
    if kind != "probs":
        return _softmax(out)
    sums = out.sum(axis=2)
    worst = np.abs(sums - 1).max()
    if out.min() < 0 or worst > PROB_TOLERANCE:
        i, j = np.unravel_index(int(np.abs(sums - 1).argmax()), sums.shape)
        raise InputError(source, "outputs", f"probabilities must be >= 0 and sum to 1 per "
                         f"sample and exit (sample {i}, exit {j} sums to {sums[i, j]:.4f})",
                         "pass logits with --kind logits, or normalise them")
    return out / sums[:, :, None]


def _labels(lab: np.ndarray, n: int, c: int, source: str) -> np.ndarray:
    """One integer class id in [0, C) per sample."""
    if lab.shape != (n,):
        raise InputError(source, "labels", f"must have shape ({n},), one per sample, got "
                         f"{lab.shape}", "give one label per row of the outputs")
    if not np.issubdtype(lab.dtype, np.integer):
        if np.issubdtype(lab.dtype, np.floating) and np.all(np.isfinite(lab)) \
                and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise InputError(source, "labels", f"must be integer class ids, got {lab.dtype}",
                             "store labels as integers 0..C-1")
    if lab.min() < 0 or lab.max() >= c:
        raise InputError(source, "labels", f"class ids must be in [0, {c}), got "
                         f"[{lab.min()}, {lab.max()}]", "labels must index the output classes")
    return lab


def choose_split(split: np.ndarray | Sequence[str] | None, val_fraction: float | None,
                 seed: int, n: int, source: str) -> np.ndarray:
    """The split codes: the given ``split``, or one drawn with ``val_fraction`` (not both)."""
    if split is not None and val_fraction is not None:
        raise InputError(source, "split", "given and --val-fraction too",
                         "give either a split or --val-fraction")
    if split is not None:
        return _split_codes(np.asarray(split), n, source)
    if val_fraction is None:
        raise InputError(source, "split", "missing", "give a split column or --val-fraction")
    return split_by_fraction(n, val_fraction, seed)


def exit_layout(exit_positions: Sequence[float] | None, exit_names: Sequence[str] | None,
                k: int, source: str) -> tuple[list[float], list[str]]:
    """The exits' positions (default 1..K) and names (default exit0..), one per exit."""
    positions = list(exit_positions) if exit_positions is not None else list(range(1, k + 1))
    names = list(exit_names) if exit_names is not None else [f"exit{i}" for i in range(k)]
    if len(positions) != k:
        raise InputError(source, "exit_positions", f"lists {len(positions)} positions for {k} "
                         "exits", f"give {k} increasing numbers, e.g. --exit-positions "
                         + ",".join(str(i) for i in range(1, k + 1)))
    if len(names) != k:
        raise InputError(source, "exit_names", f"lists {len(names)} names for {k} exits",
                         f"give {k} names")
    return positions, names


def require_both_splits(trace: ExitTrace, source: str) -> None:
    """Both val (fitting) and test (judging) need samples."""
    for name in SPLITS:
        if not (trace.split == SPLITS.index(name)).any():
            raise InputError(source, "split", f"has no {name} samples",
                             "both val (fitting) and test (judging) need samples")


def _split_codes(split: np.ndarray, n: int, source: str) -> np.ndarray:
    if split.shape != (n,):
        raise InputError(source, "split", f"must have shape ({n},), got {split.shape}",
                         "one split per sample")
    if split.dtype.kind == "O":
        split = split.astype(str)
    if split.dtype.kind in "US":
        values = set(np.unique(split.astype(str)).tolist())
        if not values <= set(SPLITS):
            raise InputError(source, "split", f"values must be 'val' or 'test', got "
                             f"{sorted(values - set(SPLITS))[:3]}", "use val / test")
        return (split.astype(str) == "test").astype(np.uint8)
    if split.dtype.kind not in "iub" or not set(np.unique(split).tolist()) <= {0, 1}:
        raise InputError(source, "split", "values must be 0 (val) and 1 (test), or 'val' and "
                         "'test'", "fix the split column")
    return split.astype(np.uint8)


def read_outputs(path: str | Path, labels: str | Path | None = None,
                 split: str | Path | None = None) -> tuple[np.ndarray, np.ndarray,
                                                            np.ndarray | None]:
    """(outputs (N, K, C), labels (N,), split or None) from files.

    ``.npz``: arrays ``outputs``, ``labels`` and optionally ``split``. ``.npy``: the outputs,
    with ``labels`` (and ``split``) given as ``.npy`` files. Parquet: one row per sample, a
    list column ``outputs`` (K lists of C numbers, or K*C numbers with ``k`` exits known from
    the shape), a ``label`` column and optionally ``split``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "no such file" if not path.exists() else "is not a file",
                         "check the path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "outputs" not in z.files:
                    raise InputError(path, "outputs", "array missing (has "
                                     f"{sorted(z.files)})", "save the outputs as 'outputs'")
                out = z["outputs"]
                lab = z["labels"] if "labels" in z.files else None
                sp = z["split"] if "split" in z.files else None
        elif suffix == ".npy":
            out, lab, sp = np.load(path, allow_pickle=False), None, None
        elif suffix in (".parquet", ".pq"):
            out, lab, sp = _read_parquet(path)
        else:
            raise InputError(path, None, f"unknown file type {suffix!r}",
                             "pass .npz, .npy or .parquet")
        if labels is not None:
            lab = np.load(labels, allow_pickle=False)
        if split is not None:
            sp = np.load(split, allow_pickle=False)
    except InputError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(path, None, f"cannot be read ({exc})".replace("\n", " "),
                         "write it with numpy.save / numpy.savez or pandas.to_parquet") from None
    if lab is None:
        raise InputError(path, "labels", "missing", "store 'labels' in the .npz or pass --labels")
    return out, lab, sp


def _read_parquet(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    import pandas as pd

    frame = pd.read_parquet(path)
    for col in ("outputs", "label"):
        if col not in frame.columns:
            raise InputError(path, col, f"column missing (has {list(frame.columns)})",
                             "one row per sample: outputs (K x C numbers), label, [split]")
    try:
        out = np.stack([np.stack([np.asarray(e, dtype=float) for e in row])
                        for row in frame["outputs"]])
    except (ValueError, TypeError) as exc:
        raise InputError(path, "outputs", f"rows must all be K lists of C numbers ({exc})",
                         "store each sample's outputs as K lists of C numbers") from None
    sp = frame["split"].to_numpy() if "split" in frame.columns else None
    return out, frame["label"].to_numpy(), sp


def trace_summary_line(trace: ExitTrace) -> str:
    """One line about an imported trace: samples per split and each exit's test accuracy."""
    acc = ", ".join(f"{a:.4f}" for a in trace.accuracy("test"))
    return (f"{trace.n_samples} samples ({trace.indices('val').size} val, "
            f"{trace.indices('test').size} test), {trace.n_exits} exits, {trace.n_classes} "
            f"classes; test accuracy per exit {acc}")
