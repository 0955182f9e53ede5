"""Replayed arrivals: reading a recorded arrival file (checked: one error naming the file, the
field and the fix) and writing one (any run can save the arrivals it drew)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from offramp.common.atomic import atomic_path
from offramp.common.errors import InputError

from .config import WorkloadConfig


@dataclass(frozen=True, eq=False)
class Recorded:
    """Arrival times (s, sorted, from 0 on) and, if recorded, each request's sample id."""

    arrival_s: np.ndarray
    sample_id: np.ndarray | None
    source: str


def load_arrivals(path: str | Path) -> Recorded:
    """Read and check a replay file; one :class:`InputError` naming the file, field and fix."""
    path = Path(path)
    stat = path.stat() if path.exists() else None
    if stat is None:
        raise InputError(str(path), None, "no such replay file",
                         "check workload.path (relative to the study file), or write one with "
                         "`offramp simulate ... --save-arrivals FILE`")
    return _load(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _load(src: str, _mtime: int, _size: int) -> Recorded:
    import pandas as pd

    fix = "write arrival_s (seconds) and optionally sample_id, one row per request"
    try:
        frame = pd.read_parquet(src) if src.endswith(".parquet") else pd.read_csv(src)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file to the user
        raise InputError(src, None, "not a readable CSV or Parquet file ("
                         + " ".join(str(exc).split()) + ")", fix) from None
    if list(frame.columns).count("arrival_s") > 1 or any(
            str(c).startswith("arrival_s.") for c in frame.columns):
        raise InputError(src, "arrival_s", "the column is given twice", fix)
    if "arrival_s" not in frame.columns:
        raise InputError(src, "arrival_s", f"column missing (columns: {list(frame.columns)})", fix)
    if len(frame) == 0:
        raise InputError(src, "arrival_s", "the file has no requests", fix)
    col = frame["arrival_s"]
    if col.dtype.kind not in "iuf":
        if col.dtype.kind in "bmM" or col.dtype == object and col.map(type).eq(bool).any():
            raise InputError(src, "arrival_s", f"holds {col.dtype} values, not seconds",
                             "write times as numbers of seconds from the start")
    arr = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0) | (arr > 1e9))
    if bad.size:
        raise InputError(src, "arrival_s", f"row {bad[0]}: {frame['arrival_s'].iloc[bad[0]]} is "
                         "not a time >= 0", "times are seconds from the start of the run")
    back = np.flatnonzero(np.diff(arr) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise InputError(src, "arrival_s", f"not sorted: row {i} ({arr[i]}) comes before row "
                         f"{i - 1} ({arr[i - 1]})", "sort the file by arrival_s")
    samples = None
    if "sample_id" in frame.columns:
        ids = pd.to_numeric(frame["sample_id"], errors="coerce").to_numpy(dtype=float)
        bad_id = ~np.isfinite(ids) | (ids != np.round(ids)) | (np.abs(ids) > 2.0**53)
        if bad_id.any():
            row = int(np.flatnonzero(bad_id)[0])
            raise InputError(src, "sample_id", f"row {row}: {frame['sample_id'].iloc[row]} is "
                             "not a sample id", "use the trace's test-split sample ids")
        samples = ids.astype(np.int64)
    return Recorded(arr, samples, src)


def replay_arrivals(cfg: WorkloadConfig, test_ids: np.ndarray, rng: np.random.Generator,
                    n: int | None, duration_s: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(arrival times, sample ids) of a replay: the file's, times / ``rate_scale``, cut to
    the run's length; sample ids drawn from the test split where the file has none."""
    rec = load_arrivals(cfg.path)
    arr = rec.arrival_s / cfg.rate_scale
    keep = arr.size if n is None else min(n, arr.size)
    if duration_s is not None:
        keep = min(keep, int(np.searchsorted(arr, duration_s, side="left")))
    arr = arr[:keep]
    if rec.sample_id is None:
        return arr, rng.choice(test_ids, arr.size)
    ids = rec.sample_id[:keep]
    outside = np.flatnonzero(~np.isin(ids, test_ids))
    if outside.size:
        row = int(outside[0])
        raise InputError(rec.source, "sample_id", f"row {row}: sample {ids[row]} is not in the "
                         f"trace's test split", "record arrivals against this trace, or drop the "
                         "sample_id column to draw samples")
    return arr, ids


def save_arrivals(path: str | Path, arrival_s: np.ndarray, sample_id: np.ndarray) -> Path:
    """Write arrivals for replay, atomically (Parquet by suffix, else CSV; exact floats)."""
    import pandas as pd

    path = Path(path)
    frame = pd.DataFrame({"arrival_s": np.asarray(arrival_s, dtype=float),
                          "sample_id": np.asarray(sample_id, dtype=np.int64)})
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, float_format="%.17g")
    return path
