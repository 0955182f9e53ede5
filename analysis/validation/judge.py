"""How ``offramp validate`` judges one cell: a pure function of the real repeats' values, the
simulated value and a target (docs/validation.md, "Verdicts").

- The real value is the median over repeats; its **spread** is robust: the larger distance
  from the median to a quartile, relative to the median (one stray repeat does not widen it).
- A cell is **within** when |error| ≤ max(spread, target), **outside** when not, and
  **too noisy** when the spread itself exceeds :data:`MEANINGFUL` (the repeats disagree too
  much for any prediction to be judged): never counted as within.
- Repeats whose busy fraction strays from the requested one, or that saturate, are
  **flagged** and left out of the cell (while at least two remain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np

MEANINGFUL = 0.25  # a spread wider than ±25% of the median leaves nothing to judge
SATURATED = 0.97   # a repeat busy this much of the time has saturated
STRAY = 0.15       # a repeat whose busy fraction is this far (relative) from the target


class Verdict(StrEnum):
    WITHIN = "within"
    OUTSIDE = "outside"
    TOO_NOISY = "too noisy"


@dataclass(frozen=True)
class Judged:
    """One cell: the real median and spread, the simulated value, the error and the verdict."""

    median: float
    q25: float
    q75: float
    min: float
    max: float
    spread: float
    sim: float
    error: float
    target: float
    verdict: Verdict
    repeats: int

    @property
    def within(self) -> bool:
        return self.verdict is Verdict.WITHIN

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict.value, "within": self.within}


def robust_spread(values: Sequence[float]) -> tuple[float, float, float, float]:
    """(median, q25, q75, spread): spread = max(median - q25, q75 - median) / median (0 where
    the median is 0)."""
    v = np.asarray(values, dtype=float)
    med, q25, q75 = (float(x) for x in np.percentile(v, [50, 25, 75]))
    spread = max(med - q25, q75 - med) / abs(med) if med else 0.0
    return med, q25, q75, spread


def judge(values: Sequence[float], sim: float, target: float,
          meaningful: float = MEANINGFUL) -> Judged:
    """The verdict of one cell (``values``: the real repeats' figure, ``sim``: the prediction,
    ``target``: the relative error allowed whatever the spread)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("no real repeats to judge against")
    med, q25, q75, spread = robust_spread(v)
    err = (sim - med) / abs(med) if med else (0.0 if sim == 0 else float("inf"))
    if spread > meaningful:
        verdict = Verdict.TOO_NOISY
    elif abs(err) <= max(spread, target):
        verdict = Verdict.WITHIN
    else:
        verdict = Verdict.OUTSIDE
    return Judged(med, q25, q75, float(v.min()), float(v.max()), spread, float(sim), float(err),
                  float(target), verdict, int(v.size))


def flag_repeats(busy: Sequence[float], target: float | None) -> list[int]:
    """Indices of repeats that saturated (busy ≥ :data:`SATURATED`) or, with a requested busy
    fraction ``target``, strayed from it by more than :data:`STRAY` of it."""
    out = []
    for i, b in enumerate(busy):
        stray = target is not None and abs(b - target) > STRAY * target
        if b >= SATURATED or stray:
            out.append(i)
    return out


def kept(values: Sequence[float], flagged: Sequence[int]) -> list[float]:
    """The values of the repeats not flagged, or all of them where fewer than two would remain."""
    rest = [v for i, v in enumerate(values) if i not in set(flagged)]
    return rest if len(rest) >= 2 else list(values)


def judge_cells(real: Sequence[dict], busy: Sequence[float], sim: dict[str, float],
                stats: Sequence[str], targets: dict[str, float], requested_busy: float | None,
                high_busy: float = 0.9) -> tuple[list[dict], list[int]]:
    """Every statistic of one (mode, load): the real repeats' summaries ``real`` (their busy
    fractions ``busy``), the simulated means ``sim``. Targets (relative errors allowed
    whatever the spread) apply below ``high_busy``; at or above it the spread alone judges.
    Returns (one row per statistic, the flagged repeats)."""
    flagged = flag_repeats(busy, requested_busy)
    level = requested_busy if requested_busy is not None else float(np.median(busy))
    rows = []
    for stat in stats:
        target = 0.0 if level >= high_busy else targets.get(stat, 0.05)
        values = [float(r[stat]) for r in real]
        cell = judge(kept(values, flagged), sim[stat], target)
        rows.append({"stat": stat, **cell.as_dict(), "values": values})  # re-judgeable later
    return rows, flagged
