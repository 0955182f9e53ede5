"""The exit traces shipped with offramp (``traces/data/``), found by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from offramp.common.errors import InputError

from .format import ExitTrace, load_trace

DATA_DIR = Path(__file__).parent / "data"
SHIPPED = {
    "fmnist-c": "fmnist-c.npz",
    "fmnist-resnet": "fmnist-resnet.npz",
    "rt-minilm6": "rt-minilm6.npz",
}
PROVENANCE = "PROVENANCE.json"
# The architecture family of each shipped model (a trace names its model by ``model_id``).
FAMILY = {"fmnist-resnet": "cnn", "rt-minilm6": "transformer"}


def model_family(model_id: str) -> str | None:
    """``cnn`` or ``transformer`` for a shipped model's id; None for any other model."""
    return FAMILY.get(model_id)


def shipped_names() -> list[str]:
    """Names of the shipped traces."""
    return sorted(SHIPPED)


def shipped_trace_path(name: str) -> Path:
    """Path of the shipped trace called ``name`` (e.g. ``fmnist-resnet``)."""
    if name not in SHIPPED:
        raise InputError(None, "trace", f"no shipped trace named {name!r}",
                         f"use one of {shipped_names()} or pass a trace file (.npz)")
    path = DATA_DIR / SHIPPED[name]
    if not path.is_file():
        raise InputError(path, None, "shipped trace file is missing from the installation",
                         "reinstall offramp, or re-record it with `offramp traces record`")
    return path


def resolve_trace(name_or_path: str | Path) -> Path:
    """A trace file path, or the shipped trace of that name."""
    path = Path(name_or_path)
    if path.is_file() or str(name_or_path) not in SHIPPED:
        return path
    return shipped_trace_path(str(name_or_path))


def recorded_checkpoint(trace: ExitTrace) -> Path | None:
    """The shipped checkpoint a trace was recorded from (``meta.produced_by.checkpoint``), if
    it ships (e.g. ``fmnist-c-resnet.pt`` for ``fmnist-c``); None otherwise."""
    name = (trace.meta.get("produced_by") or {}).get("checkpoint")
    path = DATA_DIR / str(name) if name else None
    return path if path is not None and path.suffix == ".pt" and path.is_file() else None


def load_shipped(name: str) -> ExitTrace:
    """Load and validate a shipped trace by name."""
    return load_trace(shipped_trace_path(name))


def list_shipped() -> list[dict[str, Any]]:
    """One row per shipped trace: name, model, dataset, samples per split, exits, accuracy."""
    rows = []
    for name in shipped_names():
        trace = load_shipped(name)
        rows.append({
            "name": name, "model": trace.model_id, "dataset": trace.meta["dataset"],
            "samples": trace.n_samples, "val_samples": int(len(trace.indices("val"))),
            "test_samples": int(len(trace.indices("test"))), "exits": trace.n_exits,
            "classes": trace.n_classes,
            "last_exit_test_accuracy": round(float(trace.meta["full_model_accuracy"]), 4),
            "path": str(shipped_trace_path(name)),
        })
    return rows


def provenance() -> dict[str, Any]:
    """The provenance record of the shipped files (``PROVENANCE.json``)."""
    path = DATA_DIR / PROVENANCE
    if not path.is_file():
        raise InputError(path, None, "provenance file missing", "reinstall offramp")
    return json.loads(path.read_text())
