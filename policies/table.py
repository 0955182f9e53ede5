"""A fitted static policy saved as its decisions: the exit of every sample of one trace.

Any static policy, however it was fitted (thresholds, EENet's learned scorer, Gati's
selectors), is fully described on a given trace by the exit it picks for each sample. Saving
that table makes `offramp fit -o policy.json` loadable by `offramp simulate` exactly, with no
refit; a fingerprint ties the table to the trace it was computed on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from offramp.common.atomic import atomic_path
from offramp.common.errors import InputError
from offramp.traces.format import ExitTrace

from .base import ExitPolicy, plain

FORMAT = "offramp-policy"
VERSION = 1


def trace_fingerprint(trace: ExitTrace) -> str:
    """A short hash of the trace's labels, splits and predictions."""
    h = hashlib.sha256()
    for arr in (trace.labels, trace.split, trace.pred):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


class ExitTable(ExitPolicy):
    """Exit index per sample id, as recorded from a fitted static policy."""

    name = "table"

    def __init__(self, exits: np.ndarray, fingerprint: str, source_name: str,
                 params: dict[str, Any] | None = None, active: list[bool] | None = None):
        self.exits = np.asarray(exits, dtype=np.int64)
        self.fingerprint = fingerprint
        self.source_name = source_name
        self.params = params or {}
        self.active = active
        self.source_file: str | None = None  # the file it was loaded from, for errors

    @classmethod
    def from_policy(cls, policy: ExitPolicy, trace: ExitTrace) -> ExitTable:
        if not policy.is_static:
            raise InputError("policy", "name", f"{policy.name!r} is stateful and has no exit table",
                             "save a static policy")
        exits = policy.exit_index(trace, np.arange(trace.n_samples))
        return cls(exits, trace_fingerprint(trace), policy.name, plain(policy.get_params(), finite=True),
                   policy.active_exits(trace.n_exits).tolist())

    def fit(self, trace: ExitTrace, split: str = "val") -> ExitTable:
        if trace_fingerprint(trace) != self.fingerprint or trace.n_samples != self.exits.size:
            raise InputError(trace.source, None, f"the saved policy ({self.source_name}) was fitted "
                             "on a different trace", "refit it on this trace with `offramp fit`")
        if self.exits.size and int(self.exits.max()) >= trace.n_exits:
            bad = int(self.exits.max())
            raise InputError(self.source_file, "exits", f"names exit {bad}, but the trace has "
                             f"{trace.n_exits} exits (0..{trace.n_exits - 1})",
                             "refit the policy on this trace with `offramp fit`")
        if self.active is not None:
            if len(self.active) != trace.n_exits:
                raise InputError(self.source_file, "active_exits", f"lists {len(self.active)} "
                                 f"exits, the trace has {trace.n_exits}",
                                 "refit the policy on this trace with `offramp fit`")
            active = np.asarray(self.active, dtype=bool)
            active[-1] = True  # the last exit always answers
            off = ~active[self.exits]
            if off.any():
                i = int(np.flatnonzero(off)[0])
                raise InputError(self.source_file, "exits", f"sample {i} exits at exit "
                                 f"{int(self.exits[i])}, which active_exits turns off",
                                 "refit the policy with `offramp fit`")
            self.active_exits_ = active
        return super().fit(trace, split)

    def exit_mask(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        return self.exits[samples][:, None] == np.arange(trace.n_exits)[None, :]

    def get_params(self) -> dict[str, Any]:
        return {"name": self.source_name, **{k: v for k, v in self.params.items() if k != "name"}}


def save_policy(table: ExitTable, path: str | Path, report: dict[str, Any] | None = None) -> Path:
    """Write a fitted policy (its exit table, parameters and a fit report) as JSON."""
    doc = {"format": FORMAT, "version": VERSION, "policy": table.source_name,
           "params": table.params, "trace_fingerprint": table.fingerprint,
           "active_exits": table.active,
           "report": report or {}, "exits": table.exits.tolist()}
    path = Path(path)
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(doc, allow_nan=False) + "\n")  # strict JSON, or an error
    return path


def load_policy(path: str | Path) -> ExitTable:
    """Read a policy written by :func:`save_policy`."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, "no such policy file", "write one with `offramp fit -o`")
    if path.is_dir():
        raise InputError(path, None, "is a folder, not a policy file", "pass the .json file")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"not a policy file (not JSON text: {exc})",
                         "pass a file written by `offramp fit -o`") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(path, "format", f"not an {FORMAT} file", "pass a file from `offramp fit -o`")
    if not isinstance(doc.get("version"), int) or isinstance(doc.get("version"), bool):
        raise InputError(path, "version", f"must be a whole number, got {doc.get('version')!r}",
                         "refit with `offramp fit`")
    if doc.get("version") != VERSION:
        raise InputError(path, "version", f"version {doc.get('version')} is not supported",
                         "refit with `offramp fit`")
    for key in ("policy", "trace_fingerprint", "exits"):
        if key not in doc:
            raise InputError(path, key, "missing", "refit with `offramp fit`")
    if not isinstance(doc["policy"], str) or not doc["policy"]:
        raise InputError(path, "policy", "must be the policy's name", "refit with `offramp fit`")
    if not isinstance(doc.get("params") or {}, dict):
        raise InputError(path, "params", "must be a mapping of the policy's parameters",
                         "refit with `offramp fit`")
    raw = doc["exits"]
    if not isinstance(raw, list) or not all(isinstance(e, int) and not isinstance(e, bool)
                                            for e in raw):
        raise InputError(path, "exits", "must be a list of exit indices (integers)",
                         "refit with `offramp fit`")
    exits = np.asarray(raw, dtype=np.int64)
    if exits.ndim != 1 or (exits < 0).any():
        raise InputError(path, "exits", "must be a list of non-negative exit indices",
                         "refit with `offramp fit`")
    active = doc.get("active_exits")
    if active is not None and (not isinstance(active, list)
                               or not all(isinstance(a, bool) for a in active)):
        raise InputError(path, "active_exits", "must be a list of true/false, one per exit",
                         "refit with `offramp fit`")
    table = ExitTable(exits, doc["trace_fingerprint"], doc["policy"], doc.get("params"), active)
    table.source_file = str(path)
    return table

