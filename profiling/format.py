"""The latency-profile format: measured time of each stage of a multi-exit model per batch size.

A tidy table, one row per (kind, exit index k, batch size b). ``kind`` is ``segment`` (backbone
from exit k-1 to exit k), ``head`` (exit classifier k), ``check`` (the serving loop's host cost
of one exit decision at early exit k: decide, mask to host, sync, survivor indices back),
``compact`` (gathering b survivors into a smaller batch after exit k), ``handoff`` (passing a
whole batch's activation on at boundary k when nothing is compacted) or ``overhead`` (per-batch
dispatch cost of the serving loop, k = 0). Which stages a batch pays is the one rule in
:mod:`offramp.profiling.stages`. Stored as JSON so the GPU side can write it with the standard
library alone.

Version 2 added ``check`` and ``handoff``; a version-1 file still loads, with those stages at
0 ms and a one-line notice on stderr saying so.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offramp.common.atomic import atomic_path
from offramp.common.errors import InputError
from offramp.core.modes import StageKind

from .format_meta import KINDS, MAX_MS, integer, number, validate_loop_meta

FORMAT = "offramp-profile"
VERSION = 2
READS = (1, 2)
# Stages a profile may leave out; the latency model then takes them as 0 ms.
OPTIONAL_KINDS = tuple(kind.value for kind in StageKind if kind.optional)
_NOTICED: set[str] = set()
COLUMNS = ("kind", "k", "batch", "p50_ms", "mean_ms", "p99_ms", "std_ms", "runs")
REQUIRED_META = ("model_id", "n_exits", "device", "backend", "precision", "input_shape",
                 "software", "date", "produced_by", "synthetic")


@dataclass(frozen=True, eq=False)
class LatencyProfile:
    """Measured stage latencies of one model on one device, backend and precision."""

    rows: list[dict[str, Any]]
    meta: dict[str, Any]
    source: str | None = field(default=None)

    @property
    def model_id(self) -> str:
        return str(self.meta["model_id"])

    @property
    def n_exits(self) -> int:
        return int(self.meta["n_exits"])

    def stage(self, kind: str, k: int) -> list[dict[str, Any]]:
        """Rows of one stage, sorted by batch size."""
        return sorted((r for r in self.rows if r["kind"] == kind and r["k"] == k),
                      key=lambda r: r["batch"])

    def has(self, kind: str) -> bool:
        return any(r["kind"] == kind for r in self.rows)

    def to_frame(self):  # -> pandas.DataFrame, imported lazily (GPU side has no pandas)
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(COLUMNS))


MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def save_profile(profile: LatencyProfile, path: str | Path) -> Path:
    """Validate, then write the profile atomically as JSON."""
    validate_profile(profile)
    doc = {"format": FORMAT, "version": VERSION, "meta": profile.meta,
           "rows": [{c: r[c] for c in COLUMNS} for r in profile.rows]}
    path = Path(path)
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return path


def load_profile(path: str | Path) -> LatencyProfile:
    """Load and validate a profile; raise :class:`InputError` naming what is wrong."""
    path = Path(path)
    src = str(path)
    if not path.exists():
        raise InputError(src, None, "no such profile file",
                         "check the path, or run `offramp profile list` for the shipped profiles")
    if path.is_dir():
        raise InputError(src, None, "is a folder, not a profile file",
                         "pass the profile's .json file (or a shipped name)")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(src, None, f"not valid JSON ({exc})",
                         "re-measure it with `offramp profile run`") from None
    except OSError as exc:
        raise InputError(src, None, f"cannot be read ({exc.strerror or exc})",
                         "check the path and its permissions") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(src, "format", f"not an {FORMAT} file", "pass an offramp profile (.json)")
    if not isinstance(doc.get("version"), int) or isinstance(doc.get("version"), bool):
        raise InputError(src, "version", f"must be a whole number, got {doc.get('version')!r}",
                         "re-measure the profile")
    if doc.get("version") not in READS:
        raise InputError(src, "version", f"version {doc.get('version')} is not supported "
                         f"(this offramp reads versions {READS})", "re-measure the profile")
    for key in ("meta", "rows"):
        if key not in doc:
            raise InputError(src, key, "missing", "re-measure it with `offramp profile run`")
    profile = LatencyProfile(rows=doc["rows"], meta=doc["meta"], source=src)
    validate_profile(profile)
    if doc["version"] == 1 and src not in _NOTICED:
        _NOTICED.add(src)
        print(f"offramp: notice: {src} is a version-1 profile: no check or handoff stages, "
              "taken as 0 ms (re-measure with `offramp profile run` to have them)", file=sys.stderr)
    return profile


def validate_profile(p: LatencyProfile) -> None:
    """Check metadata, columns, ranges and coverage; raise :class:`InputError` on a problem."""
    src = p.source
    fix = "re-measure it with `offramp profile run`"
    if not isinstance(p.meta, dict):
        raise InputError(src, "meta", "must be a mapping", fix)
    for key in REQUIRED_META:
        if key not in p.meta:
            raise InputError(src, f"meta.{key}", "missing", fix)
    for key in ("software", "produced_by"):
        if not isinstance(p.meta[key], dict):
            raise InputError(src, f"meta.{key}", f"must be a mapping, got {p.meta[key]!r}", fix)
    model_id = p.meta["model_id"]
    if not isinstance(model_id, str) or not MODEL_ID.fullmatch(model_id):
        raise InputError(src, "meta.model_id", f"must be a name of letters, digits, '.', '_' "
                         f"and '-', got {model_id!r}", "rename the model (it names files)")
    k_exits = p.meta["n_exits"]
    if not integer(k_exits) or k_exits < 1:
        raise InputError(src, "meta.n_exits", f"must be a positive integer, got {k_exits!r}", fix)
    if not isinstance(p.rows, list) or not p.rows:
        raise InputError(src, "rows", "profile has no rows", fix)
    seen: set[tuple] = set()
    for i, r in enumerate(p.rows):
        key = _check_row(r, f"rows[{i}]", k_exits, src, fix)
        if key in seen:
            raise InputError(src, f"rows[{i}]", f"duplicate row for {key}", fix)
        seen.add(key)
    for kind in (kind for kind in StageKind if kind.is_model):
        for k in range(k_exits):
            if not any(s[0] == kind and s[1] == k for s in seen):
                raise InputError(src, "rows", f"no rows for {kind} {k}",
                                 "measure every segment and head")
    validate_loop_meta(p.meta, src, fix)


def _check_row(r: object, where: str, k_exits: int, src: str | None, fix: str) -> tuple:
    """One row's columns, kind, exit index, batch and times; returns its (kind, k, batch)."""
    if not isinstance(r, dict):
        raise InputError(src, where, "must be a mapping", fix)
    for c in COLUMNS:
        if c not in r:
            raise InputError(src, f"{where}.{c}", "missing", fix)
    if r["kind"] not in KINDS:
        raise InputError(src, f"{where}.kind", f"{r['kind']!r} is not one of {KINDS}", fix)
    k_max = {"segment": k_exits, "head": k_exits, "compact": k_exits - 1,
             "check": k_exits - 1, "handoff": k_exits - 1, "overhead": 1}
    if not integer(r["k"]) or not 0 <= r["k"] < k_max[r["kind"]]:
        what = {"check": "an early exit (decisions are taken at exits 0..K-2)",
                "handoff": "a segment boundary (0..K-2)", "compact": "an early exit (0..K-2)",
                "overhead": "0 (overhead is per batch)"}.get(r["kind"], "an exit (0..K-1)")
        raise InputError(src, f"{where}.k", f"exit index {r['k']!r} out of range for "
                         f"kind {r['kind']} with {k_exits} exits: must be {what}", fix)
    if not integer(r["batch"]) or r["batch"] < 1:
        raise InputError(src, f"{where}.batch", f"must be a positive integer, got {r['batch']!r}",
                         fix)
    for c in ("p50_ms", "mean_ms", "p99_ms", "std_ms"):
        v = r[c]
        if not number(v) or not math.isfinite(v) or v < 0:
            raise InputError(src, f"{where}.{c}", f"must be a finite number >= 0, got {v!r}", fix)
        if v > MAX_MS:
            raise InputError(src, f"{where}.{c}", f"{v!r} ms is not a stage time: must be at "
                             f"most {MAX_MS:g} ms (an hour)", fix)
    if StageKind(r["kind"]).is_model and r["p50_ms"] <= 0:
        raise InputError(src, f"{where}.p50_ms", f"a {r['kind']} must take some time: must "
                         f"be > 0 ms, got {r['p50_ms']!r}", fix)
    if r["p99_ms"] < r["p50_ms"]:
        raise InputError(src, f"{where}.p99_ms", f"p99 {r['p99_ms']} < p50 {r['p50_ms']}", fix)
    if not integer(r["runs"]) or r["runs"] < 1:
        raise InputError(src, f"{where}.runs", f"must be a positive integer, got {r['runs']!r}",
                         fix)
    return (r["kind"], r["k"], r["batch"])


def check_profile_matches(profile: LatencyProfile, model_id: str, n_exits: int,
                          trace_source: str | None = None) -> None:
    """Raise :class:`InputError` unless the profile was measured for the trace's model."""
    src = profile.source or "profile"
    other = f" (trace {trace_source})" if trace_source else ""
    if profile.n_exits != n_exits:
        raise InputError(src, "meta.n_exits", f"profile has {profile.n_exits} exits but the "
                         f"trace{other} has {n_exits}", "use the profile measured for this model")
    if profile.model_id != model_id:
        raise InputError(src, "meta.model_id", f"profile is for model {profile.model_id!r} but "
                         f"the trace{other} is for {model_id!r}",
                         "use the profile measured for this model")
