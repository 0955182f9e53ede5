"""Where a validation's misses come from: for each served operating point with a cell outside
the real spread, the simulation's time against the real runs' split into queueing and time in
service, the time in service by the exit a request leaves at (the stages up to it), and, where
the simulation used a served-cost table, the level the real loop ran its segments at against
that table (the machine's speed that minute: a miss the same size at every exit and a level
away from 1 is the machine, not the model's shape)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MIN_SHARE = 0.02  # an exit judged only where both sides send at least this share of requests


def _times(frame: pd.DataFrame) -> pd.DataFrame:
    kept = frame[~frame["warmup"]]
    return pd.DataFrame({"queue": (kept["dispatch_s"] - kept["arrival_s"]) * 1e3,
                         "service": (kept["finish_s"] - kept["dispatch_s"]) * 1e3,
                         "exit": kept["exit_index"]})


def _rel(sim: float, real: float) -> float:
    return (sim - real) / real if real > 0 else float("nan")


def explain_key(real: pd.DataFrame, sim: pd.DataFrame) -> dict[str, Any]:
    """One operating point: medians of queueing and time in service on each side (ms), and
    the time in service by exit (median, where both sides send ≥ 2% of requests there)."""
    r, s = _times(real), _times(sim)
    out: dict[str, Any] = {}
    for part in ("queue", "service"):
        a, b = float(r[part].median()), float(s[part].median())
        a99, b99 = float(r[part].quantile(0.99)), float(s[part].quantile(0.99))
        out[part] = {"real_ms": a, "sim_ms": b, "error": _rel(b, a), "real_p99_ms": a99,
                     "sim_p99_ms": b99, "p99_error": _rel(b99, a99)}
    by_exit = {}
    for k in sorted(set(r["exit"]) & set(s["exit"])):
        rk, sk = r["service"][r["exit"] == k], s["service"][s["exit"] == k]
        if len(rk) >= MIN_SHARE * len(r) and len(sk) >= MIN_SHARE * len(s):
            a, b = float(rk.median()), float(sk.median())
            by_exit[int(k)] = {"real_ms": a, "sim_ms": b, "error": _rel(b, a)}
    out["service_by_exit"] = by_exit
    return out


def explain_line(label: str, part: dict[str, Any]) -> str:
    """The explanation as one line: which part misses most, and the exit whose stages do."""
    q, sv = part["queue"], part["service"]
    main = "in service" if abs(sv["error"]) >= abs(q["error"]) or not np.isfinite(q["error"]) \
        else "queueing"
    line = (f"{label}: {main} misses most — in service {sv['error']:+.0%} at the median "
            f"({sv['sim_ms']:.3g} vs real {sv['real_ms']:.3g} ms), {sv['p99_error']:+.0%} at "
            f"p99; queueing {q['error']:+.0%} ({q['sim_ms']:.3g} vs {q['real_ms']:.3g} ms), "
            f"{q['p99_error']:+.0%} at p99")
    by_exit = part["service_by_exit"]
    if by_exit:
        k, worst = max(by_exit.items(), key=lambda kv: abs(kv[1]["error"]))
        line += (f"; by exit, the stages up to exit {k} ({worst['error']:+.0%}; "
                 + ", ".join(f"exit {j} {v['error']:+.0%}" for j, v in by_exit.items()) + ")")
    level = part.get("level")
    if level is not None:
        line += (f"; the real loop ran its segments at x{level:.3g} of the cost model's table "
                 "(a level away from 1 at every exit is the machine's speed that minute; "
                 "`offramp profile calibrate PROFILE --relevel` moves a table to it)")
    return line


def explain_misses(table: pd.DataFrame, real: pd.DataFrame, sim: pd.DataFrame
                   ) -> dict[str, dict[str, Any]]:
    """For each operating point (``key``) with a cell judged outside: :func:`explain_key`, with
    ``line`` (what ``offramp validate`` prints)."""
    verdicts = table.get("verdict", table["within"].map({True: "within", False: "outside"}))
    out = {}
    for key in dict.fromkeys(table.loc[verdicts == "outside", "key"]):
        rows = table[table["key"] == key].iloc[0]
        load = rows["load"]
        where = (f"{load['utilisation']:.0%} busy" if "utilisation" in load
                 else f"{load['rate_rps']:g} req/s")
        part = explain_key(real[real["key"] == key], sim[sim["key"] == key])
        level = rows.get("level")
        part["level"] = None if level is None or pd.isna(level) else float(level)
        part["line"] = explain_line(f"{rows['mode']} at {where}", part)
        out[str(key)] = part
    return out
