"""Checks of a latency profile's optional in-loop metadata, which the latency model reads: the
wake-up table, the batch tail, the stage-noise correlation, the in-loop residuals and served
per-size times, and the served-cost fit (``served_costs``, profiling/served.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from offramp.common.errors import InputError
from offramp.core.modes import StageKind

MAX_MS = 3.6e6  # an hour: no stage of a served model takes longer
KINDS = tuple(kind.value for kind in StageKind)  # the canonical order (offramp.core)

Bad = Callable[[str, str], InputError]


def number(v: object) -> bool:
    """A real number (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(v: object) -> bool:
    """An integer (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _ms(x: object) -> bool:
    return number(x) and math.isfinite(x) and 0 <= x <= MAX_MS


def validate_loop_meta(meta: dict[str, Any], src: Any, fix: str) -> None:
    """Raise one :class:`InputError` naming ``meta.FIELD`` if an in-loop field is malformed."""

    def bad(field: str, problem: str) -> InputError:
        return InputError(src, f"meta.{field}", problem, fix)

    if meta.get("wake_ms") is not None:
        _check_wake(meta["wake_ms"], bad)
    if meta.get("batch_tail_ms") is not None:
        _check_tail(meta["batch_tail_ms"], "batch_tail_ms", bad)
    if meta.get("stage_noise_corr") is not None:
        _check_corr(meta["stage_noise_corr"], "stage_noise_corr", bad)
    if meta.get("served_costs") is not None:
        _check_served(meta["served_costs"], bad)
    if meta.get("in_loop_residual_ms") is not None:
        _check_residual(meta["in_loop_residual_ms"], bad)


def _check_wake(wake: object, bad: Bad) -> None:
    if not isinstance(wake, dict) or not all(k in wake for k in ("batch", "idle_ms", "extra_ms")):
        raise bad("wake_ms", "must hold batch, idle_ms and extra_ms")
    b, idle, extra = wake["batch"], wake["idle_ms"], wake["extra_ms"]
    ok = (isinstance(b, list) and b and all(integer(x) and x >= 1 for x in b)
          and isinstance(idle, list) and idle and all(number(x) and x >= 0 for x in idle)
          and isinstance(extra, list) and len(extra) == len(b)
          and all(isinstance(row, list) and len(row) == len(idle) and all(_ms(x) for x in row)
                  for row in extra))
    if not ok:
        raise bad("wake_ms", "extra_ms must be one row of finite ms >= 0 per batch size, "
                  "one value per idle time")
    if any(nxt <= cur for cur, nxt in zip(idle, idle[1:], strict=False)) or \
            any(nxt <= cur for cur, nxt in zip(b, b[1:], strict=False)):
        raise bad("wake_ms", "batch and idle_ms must increase")


def _check_tail(tail: object, field: str, bad: Bad, empty_ok: bool = False) -> None:
    ok = (isinstance(tail, dict) and isinstance(tail.get("batch"), list)
          and isinstance(tail.get("ms"), list) and (tail["batch"] or empty_ok)
          and len(tail["batch"]) == len(tail["ms"])
          and all(integer(b) and b >= 1 for b in tail["batch"])
          and all(_ms(x) for x in tail["ms"]))
    if not ok:
        raise bad(field, "must hold batch (sizes) and ms (one finite ms >= 0 each)")


def _check_corr(corr: object, field: str, bad: Bad) -> None:
    if not isinstance(corr, dict) or not all(
            number(corr.get(k)) and 0 <= corr[k] < 1 for k in ("within", "across")):
        raise bad(field, "must hold within and across, each in [0, 1)")


def _check_residual(residual: object, bad: Bad) -> None:
    if not isinstance(residual, dict):
        raise bad("in_loop_residual_ms", "must be a mapping")
    for key, v in residual.items():
        if not isinstance(v, dict) or not number(v.get("median_ms")) \
                or not math.isfinite(v["median_ms"]):
            raise bad(f"in_loop_residual_ms.{key}", "must hold median_ms (a number)")
        for name in ("served_p50_ms", "served_p99_ms"):
            pts = v.get(name)
            if pts is None:
                continue
            if not isinstance(pts, list) or not all(
                    isinstance(q, list) and len(q) == 2 and integer(q[0]) and number(q[1])
                    and math.isfinite(q[1]) and 0 < q[1] <= MAX_MS for q in pts):
                raise bad(f"in_loop_residual_ms.{key}.{name}", "must be [[batch, ms > 0], ...]")


def _check_served(served: object, bad: Bad) -> None:
    """The idle bins, an idle-factor table per stage kind, a (batch, p50 ms, σ, count) table
    per stage, the noise correlation and the tail."""
    if not isinstance(served, dict):
        raise bad("served_costs", "must be a mapping")
    idle = served.get("idle_edges_ms")
    if not (isinstance(idle, list) and idle and all(number(e) and 0 <= e <= MAX_MS for e in idle)
            and all(b > a for a, b in zip(idle, idle[1:], strict=False))):
        raise bad("served_costs.idle_edges_ms", "must be increasing times in ms")
    factor = served.get("factor")
    if not isinstance(factor, dict) or not all(k in factor for k in KINDS):
        raise bad("served_costs.factor", f"must hold a table for every stage kind "
                  f"({', '.join(KINDS)})")
    for kind, f in factor.items():
        if not (isinstance(f, dict) and isinstance(f.get("idle"), list)
                and len(f["idle"]) == len(idle) + 1
                and all(number(x) and math.isfinite(x) and 0 < x <= 1000 for x in f["idle"])):
            raise bad(f"served_costs.factor.{kind}", "must hold idle factors (one finite "
                      "number > 0 per idle bin)")
    stages = served.get("stages")
    if not isinstance(stages, dict):
        raise bad("served_costs.stages", "must be a mapping of stage to rows")
    for key, rows in stages.items():
        if not isinstance(rows, list) or not rows or not all(
                isinstance(r, list) and len(r) == 4 and integer(r[0]) and r[0] >= 1
                and number(r[1]) and math.isfinite(r[1]) and 0 < r[1] <= MAX_MS
                and number(r[2]) and math.isfinite(r[2]) and 0 <= r[2] <= 10 and integer(r[3])
                for r in rows) or any(b[0] <= a[0] for a, b in zip(rows, rows[1:], strict=False)):
            raise bad(f"served_costs.stages.{key}", "must be [[batch, p50 ms > 0, sigma >= 0, "
                      "count], ...] by increasing batch")
    _check_corr(served.get("noise_corr"), "served_costs.noise_corr", bad)
    _check_tail(served.get("batch_tail_ms"), "served_costs.batch_tail_ms", bad, empty_ok=True)
