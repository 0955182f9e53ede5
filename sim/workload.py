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
from typing import ClassVar

import numpy as np

from offramp.common.errors import InputError

from .config import WorkloadConfig
from .replay import Recorded, load_arrivals, replay_arrivals, save_arrivals

__all__ = ["ClosedLoop", "OpenLoop", "Recorded", "Workload", "load_arrivals", "replay_arrivals",
           "save_arrivals", "workload_from"]

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
