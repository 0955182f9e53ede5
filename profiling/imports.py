"""Profiles from measurements taken elsewhere: a tidy CSV, or TensorRT ``trtexec`` timings.

- **CSV** (:func:`profile_from_csv`): one row per timed run (``kind, k, batch, latency_ms``)
  or one row per stage and size with quantiles (``kind, k, batch, p50_ms, p99_ms`` and
  optionally ``mean_ms, std_ms, runs``); ``kind`` is a profile stage kind (segment, head,
  overhead, check, compact, handoff), ``k`` the exit index.
- **trtexec** (:func:`profile_from_trtexec`): the JSON that ``trtexec --exportTimes=FILE``
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
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from offramp.common.errors import InputError
from offramp.core.modes import StageKind

from .format import KINDS, LatencyProfile, validate_profile

TRT_COMPUTE = "computeMs"
TRT_H2D = ("h2dMs", "inMs")  # TensorRT 10, then older releases
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


def _finish(rows: list[dict[str, Any]], meta: dict[str, Any], source: str) -> LatencyProfile:
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
    return _finish(out, meta, src)


def read_trtexec_times(path: str | Path) -> tuple[list[float], list[float] | None]:
    """(per-iteration GPU compute ms, per-iteration host-to-device ms or None) of one
    ``trtexec --exportTimes`` file, checked against its documented layout."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise InputError(src, None, "no such file" if not path.exists() else "is not a file",
                         "check the manifest or the pattern")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(src, None, f"not valid JSON ({exc})",
                         "pass the file trtexec --exportTimes=FILE wrote") from None
    if not isinstance(doc, list) or not doc:
        raise InputError(src, None, "must be a non-empty list of per-iteration records",
                         "pass the file trtexec --exportTimes=FILE wrote")
    compute, h2d = [], []
    last_start = -math.inf
    for i, rec in enumerate(doc):
        if not isinstance(rec, dict):
            raise InputError(src, f"[{i}]", "must be a record of timings", "re-export it")
        value = rec.get(TRT_COMPUTE)
        if value is None and "startComputeMs" in rec and "endComputeMs" in rec:
            value = rec["endComputeMs"] - rec["startComputeMs"]
        if value is None:
            raise InputError(src, f"[{i}].{TRT_COMPUTE}", "missing (and no startComputeMs/"
                             "endComputeMs)", "export with trtexec --exportTimes")
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value) or value <= 0:
            raise InputError(src, f"[{i}].{TRT_COMPUTE}", f"must be a time > 0 ms, got "
                             f"{value!r}", "re-export it")
        start = rec.get("startComputeMs")
        if start is not None:
            if not isinstance(start, (int, float)) or not math.isfinite(start) or start < last_start:
                raise InputError(src, f"[{i}].startComputeMs", f"{start!r} comes before the "
                                 f"previous iteration's ({last_start}): timestamps must not go "
                                 "back", "pass the file as trtexec wrote it")
            end = rec.get("endComputeMs")
            if isinstance(end, (int, float)) and end < start:
                raise InputError(src, f"[{i}].endComputeMs", "ends before it starts",
                                 "pass the file as trtexec wrote it")
            last_start = start
        compute.append(float(value))
        copy = next((rec[k] for k in TRT_H2D if k in rec), None)
        if copy is not None:
            if not isinstance(copy, (int, float)) or not math.isfinite(copy) or copy < 0:
                raise InputError(src, f"[{i}].h2dMs", f"must be a time >= 0 ms, got {copy!r}",
                                 "re-export it")
            h2d.append(float(copy))
    return compute, (h2d if len(h2d) == len(compute) else None)


def trtexec_files(manifest: str | Path | None = None, folder: str | Path | None = None,
                  pattern: str | None = None) -> list[tuple[str, int, int, Path]]:
    """(kind, k, batch, file) of each trtexec export: from a manifest CSV (``kind,k,batch,
    file``, paths relative to it) or from ``folder`` files matching ``pattern``."""
    if manifest is not None:
        path = Path(manifest)
        out = []
        for line, r in enumerate(_read_csv(path), start=2):
            if "file" not in r:
                raise InputError(path, "file", "column missing", "columns: kind,k,batch,file")
            out.append((*_key(r, str(path), line), path.parent / r["file"].strip()))
        if not out:
            raise InputError(path, None, "lists no files", "one row per (kind, k, batch)")
        return out
    if folder is None or pattern is None:
        raise InputError("--trtexec", None, "needs a manifest, or a folder and --pattern",
                         "e.g. --pattern '{kind}{k}_b{batch}.json'")
    if "{k}" not in pattern or "{batch}" not in pattern:
        raise InputError("--pattern", None, f"{pattern!r} needs {{k}} and {{batch}}",
                         "e.g. '{kind}{k}_b{batch}.json' or 'segment{k}_b{batch}.json'")
    regex = re.escape(pattern)
    for name, group in (("kind", r"(?P<kind>[a-z]+)"), ("k", r"(?P<k>\d+)"),
                        ("batch", r"(?P<batch>\d+)")):
        regex = regex.replace(re.escape("{" + name + "}"), group)
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, None, "is not a folder", "pass the folder of trtexec exports")
    out = []
    for p in sorted(folder.iterdir()):
        m = re.fullmatch(regex, p.name)
        if m:
            kind = m.groupdict().get("kind") or "segment"
            if kind not in KINDS:
                raise InputError(p, "kind", f"{kind!r} (from the file name) is not one of "
                                 f"{KINDS}", "rename the file or fix --pattern")
            out.append((kind, int(m["k"]), int(m["batch"]), p))
    if not out:
        raise InputError(folder, None, f"no file matches {pattern!r}", "check --pattern")
    return out


def profile_from_trtexec(files: list[tuple[str, int, int, Path]], model_id: str, n_exits: int,
                         device: str, precision: str = "unknown", h2d: bool = False,
                         source: str = "trtexec") -> LatencyProfile:
    """A profile from trtexec exports (see :func:`trtexec_files`); ``h2d``: the host-to-
    device copy of segment 0 becomes the per-batch ``overhead`` stage."""
    rows, seen, copies = [], set(), {}
    for kind, k, batch, path in files:
        if (kind, k, batch) in seen:
            raise InputError(path, None, f"a second file for {kind} {k} at batch {batch}",
                             "one export per (engine, batch size)")
        seen.add((kind, k, batch))
        compute, copy = read_trtexec_times(path)
        rows.append(_row(kind, k, batch, compute))
        if StageKind(kind) is StageKind.SEGMENT and k == 0:
            copies[batch] = (copy, path)
    if h2d:
        if not copies:
            raise InputError(source, "h2d", "no segment 0 exports to take the copy from",
                             "export segment 0 too, or drop --h2d")
        for batch, (copy, path) in sorted(copies.items()):
            if copy is None:
                raise InputError(path, "h2dMs", "missing in some iterations",
                                 "export with a trtexec that writes h2dMs, or drop --h2d")
            rows.append(_row("overhead", 0, batch, copy))
    meta = _meta(model_id, n_exits, device, "tensorrt (trtexec)", precision, source,
                 {"format": "trtexec --exportTimes", "files": len(files),
                  "h2d_as_overhead": h2d, "stage_time": "GPU compute per iteration"})
    return _finish(rows, meta, source)
