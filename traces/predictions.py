"""Import a trace from a long table of per-exit predictions and confidences (CSV or Parquet),
for models whose softmax was not kept (``offramp traces import --predictions``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from offramp.common.errors import InputError

from .format import SPLITS, ExitTrace, validate_trace
from .imports import choose_split, exit_layout, require_both_splits

PREDICTION_COLUMNS = ("sample", "exit", "pred", "confidence", "label")


def import_predictions(path: str | Path, *, num_classes: int, model_id: str, dataset: str,
                       val_fraction: float | None = None, seed: int = 0,
                       exit_positions: Sequence[float] | None = None,
                       exit_names: Sequence[str] | None = None,
                       provenance: dict[str, Any] | None = None,
                       synthetic: bool = False) -> ExitTrace:
    """A trace from a long table (CSV or Parquet), one row per (sample, exit): ``sample``,
    ``exit`` (0..K-1), ``pred``, ``confidence`` (max softmax probability), ``label``, and
    optionally ``entropy`` (normalised, in [0, 1]) and ``split`` (val/test or 0/1). Without the
    softmax, policies that need it (EENet, margin) and, without ``entropy``, those that read
    the entropy (entropy, Gati) say so in one line."""
    import pandas as pd

    src = str(path)
    frame = _read_table(Path(path))
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(src, missing[0], f"column missing (has {list(frame.columns)})",
                         f"columns: {', '.join(PREDICTION_COLUMNS)}, optional entropy, split")
    for col in ("sample", "exit", "pred", "label"):
        v = pd.to_numeric(frame[col], errors="coerce")
        if v.isna().any() or (v != v.round()).any() or (v < 0).any():
            row = int(np.flatnonzero(v.isna() | (v != v.round()) | (v < 0))[0])
            raise InputError(src, col, f"row {row}: {frame[col].iloc[row]!r} is not an id >= 0",
                             "use whole numbers")
        frame[col] = v.astype(np.int64)
    samples = np.unique(frame["sample"])
    k = int(frame["exit"].max()) + 1
    n = samples.size
    if len(frame) != n * k or frame.duplicated(["sample", "exit"]).any():
        raise InputError(src, "exit", f"needs one row per sample and exit ({n} samples x {k} "
                         f"exits = {n * k} rows, got {len(frame)})", "fill in every exit once")
    frame = frame.sort_values(["sample", "exit"])
    grid = {c: frame[c].to_numpy().reshape(n, k) for c in ("pred", "label")}
    labels = grid["label"][:, 0]
    if (grid["label"] != labels[:, None]).any():
        raise InputError(src, "label", "differs between exits of one sample", "one label each")
    conf = pd.to_numeric(frame["confidence"], errors="coerce").to_numpy(float).reshape(n, k)
    entropy_recorded = "entropy" in frame.columns
    ent = (pd.to_numeric(frame["entropy"], errors="coerce").to_numpy(float).reshape(n, k)
           if entropy_recorded else np.full((n, k), np.nan))
    given = frame["split"].to_numpy()[::k] if "split" in frame.columns else None
    sp = choose_split(given, val_fraction, seed, n, src)
    positions, names = exit_layout(exit_positions, exit_names, k, src)
    correct = grid["pred"] == labels[:, None]
    test = sp == SPLITS.index("test")
    meta = {"model_id": model_id, "dataset": dataset, "exit_names": names,
            "exit_positions": positions, "num_classes": int(num_classes),
            "full_model_accuracy": float(correct[test, -1].mean()) if test.any() else 0.0,
            "entropy_recorded": entropy_recorded, "synthetic": bool(synthetic),
            "produced_by": {"command": "import_predictions", "imported_from": src,
                            "sample_ids": [int(samples[0]), int(samples[-1])],
                            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                            **(provenance or {})}}
    trace = ExitTrace(labels=labels, split=sp, pred=grid["pred"], maxprob=conf.astype(np.float32),
                      entropy=ent.astype(np.float32), correct=correct, meta=meta, source=src)
    validate_trace(trace)
    require_both_splits(trace, src)
    return trace


def _read_table(path: Path) -> Any:
    """The table as a DataFrame; one clear error if it is missing or unreadable."""
    import pandas as pd

    if not path.is_file():
        raise InputError(path, None, "no such file" if not path.exists() else "is not a file",
                         "check the path")
    try:
        return pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") \
            else pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file to the user
        raise InputError(str(path), None, "not a readable CSV or Parquet table ("
                         + " ".join(str(exc).split()) + ")", "one row per sample and exit"
                         ) from None
