"""Re-levelling a served-cost table on a short stream served now.

A served-cost table (:mod:`.served`) describes the machine on the day it was fitted: on this VM
the same loop ran one model 10–15% slower a day after its calibration while another ran 9%
faster (docs/validation.md). A full calibration serves several loads and exit modes for
minutes; :func:`relevel` keeps the table's shape — each stage's curve in batch size, the idle
factors, the noise — and moves each stage's level to what a short stream served now shows:

    shift(stage) = median over the stream's times of that stage of log(observed / predicted)

with *predicted* the table's time at the batch's size times the stage kind's idle factor. A
stage the stream ran fewer than :data:`.served.MIN_CELL` times takes its kind's median shift
(over the kind's stages that have their own), else the median over every stage that has one;
the per-batch tail moves by the segments' median shift. Numpy and the standard library only.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from offramp.core.modes import StageKind

from .served import MIN_CELL, idle_bin, stage_table


def _log_ratios(served: dict[str, Any], t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per stage key ('segment 0', ...) the log(observed / predicted) of each of its times."""
    ib = idle_bin(t["idle"])
    out = {}
    for code, k in sorted({(int(c), int(k)) for c, k in zip(t["kind"], t["k"], strict=True)}):
        kind = StageKind.from_code(code)
        rows = served["stages"].get(f"{kind} {k}")
        if not rows:
            continue
        p50 = {int(r[0]): float(r[1]) for r in rows if r[1]}
        pick = np.flatnonzero((t["kind"] == code) & (t["k"] == k))
        pred = np.array([p50.get(int(b), np.nan) for b in t["b"][pick]])
        pred *= np.asarray(served["factor"][str(kind)]["idle"])[ib[pick]]
        ok = np.isfinite(pred) & (pred > 0) & (t["ms"][pick] > 0)
        out[f"{kind} {k}"] = np.log(t["ms"][pick][ok] / pred[ok])
    return out


def level_shifts(served: dict[str, Any], runs: Sequence[dict[str, np.ndarray]]
                 ) -> tuple[dict[str, float], list[str], int]:
    """(shift factor per stage of the table, the stages with a shift of their own, stage times
    read) of ``runs`` (arrays as ``real_runs.serve_stream`` writes them) against ``served``."""
    t = stage_table(runs)
    ratios = _log_ratios(served, t)
    own = {key: float(np.median(r)) for key, r in ratios.items() if r.size >= MIN_CELL}
    if not own:
        raise ValueError("the streams ran no stage of the table often enough to re-level it")
    every = float(np.median(list(own.values())))
    by_kind: dict[str, list[float]] = {}
    for key, s in own.items():
        by_kind.setdefault(key.split()[0], []).append(s)
    shifts = {}
    for key in served["stages"]:
        kind = key.split()[0]
        s = own.get(key, float(np.median(by_kind[kind])) if kind in by_kind else every)
        shifts[key] = math.exp(s)
    return shifts, sorted(own), int(t["ms"].size)


def relevel(served: dict[str, Any], runs: Sequence[dict[str, np.ndarray]],
            sources: Sequence[str] = (), what: dict[str, Any] | None = None) -> dict[str, Any]:
    """``served`` with every stage's level moved by :func:`level_shifts` of ``runs``; the shape
    (sizes, sigmas, idle factors, noise) and ``fitted_on`` kept, ``relevelled`` added (the
    factors, the stages with their own, ``sources``, ``what`` the streams were, the date)."""
    shifts, own, n = level_shifts(served, runs)
    stages = {key: [[r[0], None if r[1] is None else round(r[1] * shifts[key], 6), *r[2:]]
                    for r in rows] for key, rows in served["stages"].items()}
    tail_shift = _segments(shifts, own)
    if tail_shift is None:
        tail_shift = float(np.median(list(shifts.values())))
    tail = served.get("batch_tail_ms") or {"batch": [], "ms": []}
    return {**served, "stages": stages,
            "batch_tail_ms": {"batch": list(tail["batch"]),
                              "ms": [round(x * tail_shift, 6) for x in tail["ms"]]},
            "relevelled": {"factor": {k: round(v, 4) for k, v in shifts.items()},
                           "own": own, "stage_times": n, "streams": len(runs),
                           "sources": list(sources), **(what or {}),
                           "date": datetime.datetime.now(datetime.UTC).isoformat(
                               timespec="seconds")}}


def _segments(shifts: dict[str, float], own: Sequence[str]) -> float | None:
    """The median factor of the segments with a shift of their own (None: no such segment)."""
    seg = [shifts[k] for k in own if k.startswith(f"{StageKind.SEGMENT} ")]
    return float(np.median(seg)) if seg else None


def segment_level(served: dict[str, Any], runs: Sequence[dict[str, np.ndarray]]
                  ) -> float | None:
    """How fast the loop ran its segments in ``runs`` against the table ``served`` (the
    machine's level: 1.1 = 10% slower than the table says; :func:`level_shifts`' segment
    factors, their median, over every stage time of the streams, warm-up included); None where
    no segment ran often enough to tell."""
    try:
        shifts, own, _ = level_shifts(served, runs)
    except ValueError:
        return None
    return _segments(shifts, own)


def describe_factors(factors: dict[str, float]) -> str:
    """The factors of a re-levelling as one range per stage kind ('segment x0.93..0.97, ...')."""
    kinds: dict[str, list[float]] = {}
    for key, f in factors.items():
        kinds.setdefault(key.split()[0], []).append(f)
    return ", ".join(f"{kind} x{min(f):.3g}" + (f"..{max(f):.3g}" if max(f) > min(f) else "")
                     for kind, f in sorted(kinds.items()))
