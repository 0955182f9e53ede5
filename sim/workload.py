"""Workloads: what draws a replication's requests, and the arrival processes behind them.

A :class:`OpenLoop` draws arrival times and the test sample each request carries
(:class:`OpenArrivals`); a :class:`ClosedLoop` is a client model (:class:`ClosedClients`:
N clients that each send, wait for the answer, think, and send again). Both draw from the
replication's own random streams, so the same seed gives the same requests anywhere.

Inter-arrival gaps are drawn whole (no clipping) so the generators keep their rate and CV;
arrival times are their running sum, in seconds. ``replay`` reads recorded arrivals (and
optionally which test sample each request carries) from a CSV or Parquet file; any run can
save the arrivals it drew (:func:`save_arrivals`) for replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from offramp.common.atomic import atomic_path
from offramp.common.errors import InputError

from .config import WorkloadConfig

CHUNK = 65_536


def open_loop_arrivals(cfg: WorkloadConfig, rng: np.random.Generator, n: int | None = None,
                       duration_s: float | None = None) -> np.ndarray:
    """Arrival times (s) of ``n`` requests, or of every request before ``duration_s``."""
    return OPEN_KINDS[cfg.kind](cfg).times(rng, n, duration_s)


def route_static(routing: str, n: int, replicas: int, rng: np.random.Generator) -> np.ndarray:
    """Replica of each request for state-independent routing (round robin, random)."""
    if routing == "round_robin":
        return np.arange(n) % replicas
    if routing == "random":
        return rng.integers(0, replicas, n)
    raise ValueError(f"routing {routing!r} depends on server state")


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


@dataclass(frozen=True, eq=False)
class OpenArrivals:
    """One replication's open-loop requests: arrival times (s, sorted) and sample ids."""

    times: np.ndarray
    samples: np.ndarray


@dataclass(frozen=True, eq=False)
class ClosedClients:
    """One replication's closed-loop clients and the streams their think times and samples
    come from; the run stops after ``max_requests`` requests or at ``duration_s``."""

    clients: int
    think_ms: float
    think_rng: np.random.Generator
    sample_rng: np.random.Generator
    test_ids: np.ndarray
    max_requests: int | None
    duration_s: float | None


@dataclass(frozen=True)
class OpenLoop:
    """Arrivals independent of the server; one frozen subclass per ``workload.kind``, each
    knowing its mean rate and how to run faster (``SCALES``: the field that scales it)."""

    config: WorkloadConfig
    SCALES: ClassVar[str] = "rate_scale"

    def draw(self, arrival_rng: np.random.Generator, sample_rng: np.random.Generator,
             test_ids: np.ndarray, requests: int | None, duration_s: float | None
             ) -> OpenArrivals:
        """This replication's arrivals and the test sample each carries."""
        times = self.times(arrival_rng, requests, duration_s)
        return OpenArrivals(times, sample_rng.choice(test_ids, times.size))

    def times(self, rng: np.random.Generator, n: int | None, duration_s: float | None
              ) -> np.ndarray:
        """Arrival times (s) of ``n`` requests, or of every request before ``duration_s``."""
        raise NotImplementedError

    def unit_rate(self) -> float:
        """Mean arrival rate (req/s) with the scaling field at 1 (``rate_rps``: 1 req/s)."""
        return 1.0

    def mean_rate(self) -> float:
        """Long-run mean arrival rate (req/s)."""
        return self.unit_rate() * getattr(self.config, self.SCALES)

    def at_rate(self, rate_rps: float) -> OpenLoop:
        """The same process with mean rate ``rate_rps``."""
        return type(self)(self.config.model_copy(update={self.SCALES: rate_rps / self.unit_rate()}))

    def scaled(self, k: float) -> OpenLoop:
        """The same process, arrivals ``k`` times as fast."""
        return type(self)(self.config.model_copy(
            update={self.SCALES: getattr(self.config, self.SCALES) * k}))


class Poisson(OpenLoop):
    """Exponential gaps at ``rate_rps``."""

    SCALES: ClassVar[str] = "rate_rps"

    def gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(1.0 / self.config.rate_rps, n)

    def times(self, rng: np.random.Generator, n: int | None, duration_s: float | None
              ) -> np.ndarray:
        if n is not None:
            return np.cumsum(self.gaps(rng, n))
        assert duration_s is not None
        parts, t0 = [], 0.0
        while True:
            chunk = t0 + np.cumsum(self.gaps(rng, CHUNK))
            inside = chunk[chunk < duration_s]
            parts.append(inside)
            if inside.size < CHUNK:
                return np.concatenate(parts)
            t0 = float(chunk[-1])


class Gamma(Poisson):
    """Gamma gaps at ``rate_rps`` with coefficient of variation ``cv``."""

    def gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        shape = 1.0 / self.config.cv**2
        return rng.gamma(shape, 1.0 / self.config.rate_rps / shape, n)


class MMPP(OpenLoop):
    """Markov-modulated Poisson bursts (:mod:`offramp.sim.processes`)."""

    def unit_rate(self) -> float:
        from .processes import mean_rate

        return mean_rate(self.config.model_copy(update={"rate_scale": 1.0}))

    def times(self, rng: np.random.Generator, n: int | None, duration_s: float | None
              ) -> np.ndarray:
        from .processes import mmpp_arrivals

        return mmpp_arrivals(self.config, rng, n, duration_s)


class Diurnal(MMPP):
    """A rate curve over time: a sine or a per-minute CSV (:mod:`offramp.sim.processes`)."""

    def times(self, rng: np.random.Generator, n: int | None, duration_s: float | None
              ) -> np.ndarray:
        from .processes import diurnal_arrivals

        return diurnal_arrivals(self.config, rng, n, duration_s)


class Replay(OpenLoop):
    """Recorded arrivals (and sample ids, if recorded), ``rate_scale`` times as fast."""

    def draw(self, arrival_rng: np.random.Generator, sample_rng: np.random.Generator,
             test_ids: np.ndarray, requests: int | None, duration_s: float | None
             ) -> OpenArrivals:
        return OpenArrivals(*replay_arrivals(self.config, test_ids, sample_rng, requests,
                                             duration_s))

    def unit_rate(self) -> float:
        """Requests per second of the file at rate_scale 1 (its mean rate)."""
        times = load_arrivals(self.config.path).arrival_s
        if times.size < 2 or times[-1] <= times[0]:
            raise InputError(self.config.path, "arrival_s", "needs two arrivals at different "
                             "times to have a rate", "replay a longer file")
        return float((times.size - 1) / (times[-1] - times[0]))


@dataclass(frozen=True)
class ClosedLoop:
    """``clients`` clients, each thinking an exponential ``think_ms`` between requests."""

    clients: int
    think_ms: float

    def draw(self, think_rng: np.random.Generator, sample_rng: np.random.Generator,
             test_ids: np.ndarray, requests: int | None, duration_s: float | None
             ) -> ClosedClients:
        return ClosedClients(self.clients, self.think_ms, think_rng, sample_rng, test_ids,
                             requests, duration_s)


Workload = OpenLoop | ClosedLoop

OPEN_KINDS: dict[str, type[OpenLoop]] = {"poisson": Poisson, "gamma": Gamma, "replay": Replay,
                                         "mmpp": MMPP, "diurnal": Diurnal}


def workload_from(cfg: WorkloadConfig) -> Workload:
    """The workload a study's ``workload`` section describes (one class per kind)."""
    if cfg.kind in OPEN_KINDS:
        return OPEN_KINDS[cfg.kind](cfg)
    return ClosedLoop(cfg.clients, cfg.think_ms)
