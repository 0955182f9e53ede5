"""Profiles from measurements taken elsewhere: a tidy CSV, or TensorRT ``trtexec`` timings.

- **CSV** (:func:`profile_from_csv`): one row per timed run (``kind, k, batch, latency_ms``)
  or one row per stage and size with quantiles (``kind, k, batch, p50_ms, p99_ms`` and
  optionally ``mean_ms, std_ms, runs``); ``kind`` is a profile stage kind (segment, head,
  overhead, check, compact, handoff), ``k`` the exit index.
- **trtexec** (:mod:`.trtexec`, ``profile_from_trtexec``): the JSON that ``trtexec --exportTimes=FILE``
  writes, one file per (engine, batch size): a list with one record per inference iteration
  (TensorRT 10: ``startEnqMs, endEnqMs, startH2dMs, endH2dMs, startComputeMs, endComputeMs,
  startD2hMs, endD2hMs, h2dMs, computeMs, d2hMs, latencyMs, endToEndMs``; older releases name
  the copies ``inMs`` / ``outMs``). Each iteration's GPU compute time is one sample of that
  stage's per-batch latency; with ``h2d`` the first segment's host-to-device copy becomes the
  per-batch ``overhead`` stage. Files are listed in a manifest (CSV ``kind,k,batch,file``) or
  found in a folder by a name pattern with ``{kind}``, ``{k}`` and ``{batch}``.

The result is validated like any profile (``offramp.profiling.format``) and records where it
came from. Standard library and numpy only.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from offramp.common.errors import InputError
from offramp.core.modes import StageKind

from .format import KINDS, LatencyProfile, validate_profile

Z99 = 2.3263478740408408


def _row(kind: str, k: int, batch: int, samples: Iterable[float]) -> dict[str, Any]:
    ts = np.asarray(list(samples), dtype=float)
    return {"kind": kind, "k": k, "batch": batch, "p50_ms": float(np.percentile(ts, 50)),
            "mean_ms": float(ts.mean()), "p99_ms": float(np.percentile(ts, 99)),
            "std_ms": float(ts.std()), "runs": int(ts.size)}


def _meta(model_id: str, n_exits: int, device: str, backend: str, precision: str,
          source: str, how: dict[str, Any]) -> dict[str, Any]:
    return {"model_id": model_id, "n_exits": n_exits, "device": device, "backend": backend,
            "precision": precision, "input_shape": [], "software": {},
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "produced_by": {"command": "offramp profile import", "imported_from": source, **how},
            "synthetic": False}


def finish(rows: list[dict[str, Any]], meta: dict[str, Any], source: str) -> LatencyProfile:
    """The profile of imported rows, checked as a whole."""
    # Every segment and head is measured at the same batch sizes: a size missing for one of
    # them would be interpolated from its neighbours without anyone having asked for that.
    sizes = {(r["kind"], r["k"]): set() for r in rows if StageKind(r["kind"]).is_model}
    for r in rows:
        if (r["kind"], r["k"]) in sizes:
            sizes[r["kind"], r["k"]].add(r["batch"])
    every = set().union(*sizes.values()) if sizes else set()
    for (kind, k), have in sorted(sizes.items()):
        if have != every:
            missing = sorted(every - have)
            raise InputError(source, f"{kind} {k}", f"has no measurement at batch size "
                             f"{missing[0]} (others have {sorted(every)})",
                             "measure every segment and head at the same batch sizes")
    rows.sort(key=lambda r: (StageKind(r["kind"]).code, r["k"], r["batch"]))
    meta["batches"] = sorted({r["batch"] for r in rows})
    profile = LatencyProfile(rows=rows, meta=meta, source=source)
    validate_profile(profile)
    return profile


def _cell(value: str, cast, src: str, field: str, line: int, what: str):
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise InputError(src, f"line {line}: {field}", f"must be {what}, got {value!r}",
                         "fix that row") from None


def _int(value: str, src: str, field: str, line: int) -> int:
    return _cell(value, int, src, field, line, "a whole number")


def _float(value: str, src: str, field: str, line: int) -> float:
    out = _cell(value, float, src, field, line, "a number (ms)")
    if not math.isfinite(out) or out < 0:
        raise InputError(src, f"line {line}: {field}", f"must be a finite number >= 0, got "
                         f"{value!r}", "fix that row")
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(path, None, "no such file" if not path.exists() else "is not a file",
                         "check the path")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise InputError(path, None, f"not a readable CSV ({exc})", "save it as UTF-8 CSV"
                         ) from None


def _key(r: dict[str, str], src: str, line: int) -> tuple[str, int, int]:
    kind = (r.get("kind") or "").strip()
    if kind not in KINDS:
        raise InputError(src, f"line {line}: kind", f"{kind!r} is not one of {KINDS}",
                         "name each row's stage kind")
    return kind, _int(r.get("k", r.get("exit")), src, "k", line), _int(r.get("batch"), src,
                                                                        "batch", line)


def profile_from_csv(path: str | Path, model_id: str, n_exits: int, device: str,
                     backend: str = "imported", precision: str = "unknown") -> LatencyProfile:
    """A profile from a tidy CSV of samples or quantiles (see the module docstring)."""
    return finish(*csv_part(path, model_id, n_exits, device, backend, precision))


def csv_part(path: str | Path, model_id: str, n_exits: int, device: str,
             backend: str = "imported", precision: str = "unknown"
             ) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """(rows, meta, source) of a tidy CSV, checked, before the profile as a whole is."""
    path = Path(path)
    src = str(path)
    rows = _read_csv(path)
    if not rows:
        raise InputError(src, None, "has no rows", "one row per timed run or per stage and size")
    cols = set(rows[0])
    for need in ("kind", "batch"):
        if need not in cols:
            raise InputError(src, need, f"column missing (has {sorted(cols)})",
                             "columns: kind, k, batch, and latency_ms or p50_ms and p99_ms")
    if "k" not in cols and "exit" not in cols:
        raise InputError(src, "k", "column missing", "add the exit index column k")
    if "latency_ms" in cols:
        samples: dict[tuple[str, int, int], list[float]] = {}
        for line, r in enumerate(rows, start=2):
            samples.setdefault(_key(r, src, line), []).append(
                _float(r["latency_ms"], src, "latency_ms", line))
        out = [_row(kind, k, b, ts) for (kind, k, b), ts in samples.items()]
        how = {"format": "csv samples"}
    elif {"p50_ms", "p99_ms"} <= cols:
        out, seen = [], set()
        for line, r in enumerate(rows, start=2):
            key = _key(r, src, line)
            if key in seen:
                raise InputError(src, f"line {line}", f"a second row for {key}",
                                 "one row per (kind, k, batch)")
            seen.add(key)
            p50 = _float(r["p50_ms"], src, "p50_ms", line)
            p99 = _float(r["p99_ms"], src, "p99_ms", line)
            mean = _float(r["mean_ms"], src, "mean_ms", line) if r.get("mean_ms") else p50
            std = (_float(r["std_ms"], src, "std_ms", line) if r.get("std_ms")
                   else max(0.0, (p99 - p50) / Z99))
            runs = _int(r["runs"], src, "runs", line) if r.get("runs") else 1
            out.append({"kind": key[0], "k": key[1], "batch": key[2], "p50_ms": p50,
                        "mean_ms": mean, "p99_ms": p99, "std_ms": std, "runs": runs})
        how = {"format": "csv quantiles"}
    else:
        raise InputError(src, "latency_ms", f"neither latency_ms nor p50_ms and p99_ms (has "
                         f"{sorted(cols)})", "give samples (latency_ms) or quantiles")
    devices = {r.get("device", "").strip() for r in rows} - {""}
    if len(devices) > 1:
        raise InputError(src, "device", f"rows from several devices {sorted(devices)}",
                         "import one device per profile")
    meta = _meta(model_id, n_exits, devices.pop() if devices else device, backend, precision,
                 src, how)
    return out, meta, src


def merge_parts(parts: list[tuple[list[dict[str, Any]], dict[str, Any], str]]) -> LatencyProfile:
    """One profile from several imports (e.g. trtexec for segments and heads, a CSV for checks,
    handoffs and compaction): a stage and size given by two of them is an error naming both."""
    if len(parts) == 1:
        return finish(*parts[0])
    rows, owner = [], {}
    for part_rows, _, src in parts:
        for r in part_rows:
            key = (r["kind"], r["k"], r["batch"])
            if key in owner:
                raise InputError(src, f"{key[0]} {key[1]}", f"batch {key[2]} is also in "
                                 f"{owner[key]}", "give each stage and size in one source")
            owner[key] = src
            rows.append(r)
    meta = dict(parts[0][1])
    source = " + ".join(src for _, _, src in parts)
    meta["backend"] = " + ".join(dict.fromkeys(m["backend"] for _, m, _ in parts))
    meta["produced_by"] = {"command": "offramp profile import", "imported_from": source,
                           "parts": [m["produced_by"] for _, m, _ in parts]}
    return finish(rows, meta, source)
