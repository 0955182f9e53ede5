"""Bursty and time-varying arrival processes, each with its analytic mean rate.

- **MMPP** (``kind: mmpp``): a Markov-modulated Poisson process that cycles through states
  0, 1, ..., S-1, 0, ...; state i lasts an exponential time of mean ``sojourn_s[i]`` and
  emits Poisson arrivals at ``rates_rps[i]`` (an on/off burst source with two states, one of
  rate 0). Mean rate: sum(r_i s_i) / sum(s_i).
- **Diurnal** (``kind: diurnal``): a non-homogeneous Poisson process with rate
  ``rate_rps * (1 + amplitude * sin(2 pi t / period_s))``, or a recorded curve
  (``curve_path``: a CSV with column ``rate_rps``, one row per minute, each minute lasting
  60 / ``compress`` seconds of the run; the rates themselves are kept). Drawn by thinning.

Every process divides its times by ``rate_scale`` (so a capacity search can scale any of
them), and draws only from the replication's arrival stream.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from offramp.common.errors import InputError

from .config import WorkloadConfig

CHUNK = 4096


def mean_rate(cfg: WorkloadConfig) -> float:
    """The process's long-run mean arrival rate (req/s), after ``rate_scale``."""
    if cfg.kind == "mmpp":
        r, s = np.array(cfg.rates_rps), np.array(cfg.sojourn_s)
        return float((r * s).sum() / s.sum()) * cfg.rate_scale
    if cfg.kind == "diurnal":
        if cfg.curve_path:
            return float(np.mean(load_curve(cfg.curve_path))) * cfg.rate_scale
        return cfg.rate_rps * cfg.rate_scale
    if cfg.kind in ("poisson", "gamma"):
        return cfg.rate_rps
    raise ValueError(f"{cfg.kind} has no analytic mean rate here")


def mmpp_idc(cfg: WorkloadConfig) -> float:
    """Asymptotic index of dispersion of counts of a two-state MMPP (1 for Poisson):
    1 + 2 (l1 - l2)^2 a b / ((a + b)^2 (l1 b + l2 a)), a and b the rates of leaving state 1
    and state 2 (1 / mean sojourn)."""
    if cfg.kind != "mmpp" or len(cfg.rates_rps) != 2:
        raise ValueError("the closed form is for a two-state MMPP")
    (l1, l2), (s1, s2) = cfg.rates_rps, cfg.sojourn_s
    a, b = 1.0 / s1, 1.0 / s2
    return 1.0 + 2.0 * (l1 - l2) ** 2 * a * b / ((a + b) ** 2 * (l1 * b + l2 * a))


def _enough(times: list[np.ndarray], count: int, n: int | None, t: float,
            duration_s: float | None) -> bool:
    return (n is not None and count >= n) or (duration_s is not None and t >= duration_s)


def _cut(times: list[np.ndarray], n: int | None, duration_s: float | None) -> np.ndarray:
    out = np.concatenate(times) if times else np.zeros(0)
    if duration_s is not None:
        out = out[out < duration_s]
    return out[:n] if n is not None else out


def mmpp_arrivals(cfg: WorkloadConfig, rng: np.random.Generator, n: int | None,
                  duration_s: float | None) -> np.ndarray:
    """Arrival times (s) of ``n`` requests, or of those before ``duration_s``."""
    rates = np.array(cfg.rates_rps) * cfg.rate_scale
    sojourn = np.array(cfg.sojourn_s) / cfg.rate_scale
    states = len(rates)
    times, count, t, state = [], 0, 0.0, 0
    while not _enough(times, count, n, t, duration_s):
        stay = rng.exponential(sojourn[state])
        k = rng.poisson(rates[state] * stay)
        if k:
            times.append(t + np.sort(rng.uniform(0.0, stay, k)))
            count += k
        t += stay
        state = (state + 1) % states
    return _cut(times, n, duration_s)


def diurnal_arrivals(cfg: WorkloadConfig, rng: np.random.Generator, n: int | None,
                     duration_s: float | None) -> np.ndarray:
    """Arrival times (s) by thinning a Poisson stream at the curve's peak rate."""
    scale = cfg.rate_scale
    if cfg.curve_path:
        curve = load_curve(cfg.curve_path) * scale
        minute = 60.0 / cfg.compress / scale

        def rate(t: np.ndarray) -> np.ndarray:
            return curve[(t // minute).astype(np.int64) % curve.size]

        peak = float(curve.max())
    else:
        base, amp, period = cfg.rate_rps * scale, cfg.amplitude, cfg.period_s / scale

        def rate(t: np.ndarray) -> np.ndarray:
            return base * (1.0 + amp * np.sin(2.0 * math.pi * t / period))

        peak = base * (1.0 + amp)
    times, count, t = [], 0, 0.0
    while not _enough(times, count, n, t, duration_s):
        cand = t + np.cumsum(rng.exponential(1.0 / peak, CHUNK))
        keep = cand[rng.uniform(0.0, peak, CHUNK) < rate(cand)]
        times.append(keep)
        count += keep.size
        t = float(cand[-1])
    return _cut(times, n, duration_s)


def load_curve(path: str | Path) -> np.ndarray:
    """Rates (req/s) per minute from a CSV with column ``rate_rps``; one clear error each."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "workload.curve_path", "no such file" if not path.exists()
                         else "is not a file", "a CSV with column rate_rps, one row per minute")
    stat = path.stat()
    return _curve(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _curve(src: str, _mtime: int, _size: int) -> np.ndarray:
    import pandas as pd

    try:
        frame = pd.read_csv(src)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputError(src, None, f"not a readable CSV ({exc})".replace("\n", " "),
                         "a CSV with column rate_rps") from None
    if "rate_rps" not in frame.columns:
        raise InputError(src, "rate_rps", f"column missing (columns: {list(frame.columns)})",
                         "one row per minute with the arrival rate in req/s")
    rates = pd.to_numeric(frame["rate_rps"], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(rates) | (rates < 0))
    if bad.size:
        raise InputError(src, "rate_rps", f"row {bad[0]}: {frame['rate_rps'].iloc[bad[0]]} is "
                         "not a rate >= 0", "rates are requests per second")
    if rates.size == 0 or rates.max() <= 0:
        raise InputError(src, "rate_rps", "no minute has a positive rate", "fill in the curve")
    return rates
