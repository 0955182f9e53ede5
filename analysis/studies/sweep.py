"""Sweeps: one study run at every point of a grid of config fields, resumable, on any executor.

A grid file names config fields by dotted path (``server.max_batch``) and either the values
to cross (``grid:``, the cartesian product) or the points themselves (``points:``, a list of
mappings). Every point is one study (the base study with that point's fields set), written as
one JSON result file under ``OUT/points/`` named by its parameters, atomically: a re-run skips
the points already written, so a killed sweep loses only the points in flight. The results
are gathered into ``OUT/sweep.parquet`` (one row per point: its fields, then each metric's
mean and 95% CI half-width).

The points run on a ``concurrent.futures`` executor: a local process pool by default, or a
Dask distributed cluster through ``Client.get_executor()`` — the same code path.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, as_completed
from pathlib import Path
from typing import Any

import pandas as pd

from offramp.analysis.study.config import load_yaml, parse_config
from offramp.analysis.study.overrides import apply_fields
from offramp.common.atomic import atomic_path
from offramp.common.errors import InputError
from offramp.common.machine import command_line

SWEEP_OUTPUTS = ("points", "sweep.parquet", "sweep.json", "report.html")


def load_grid(path: str | Path) -> list[dict[str, Any]]:
    """The points of a grid file: ``grid: {field: [values]}`` (their product) or ``points:
    [{field: value, ...}, ...]``; fields are ``section.field`` paths of a study."""
    doc = load_yaml(path)
    if not isinstance(doc, dict) or set(doc) - {"grid", "points"} or not doc:
        raise InputError(path, None, "must hold grid: (fields and their values) or points: "
                         "(a list of field mappings)", "see docs/sweeps.md for the format")
    points: list[dict[str, Any]] = []
    if "grid" in doc:
        grid = doc["grid"]
        if not isinstance(grid, dict) or not grid:
            raise InputError(path, "grid", "must map fields to lists of values",
                             "e.g. grid: {server.max_batch: [8, 16, 32]}")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise InputError(path, f"grid.{key}", "must be a non-empty list of values",
                                 "e.g. [8, 16, 32]")
        keys = list(grid)
        points += [dict(zip(keys, combo, strict=True))
                   for combo in itertools.product(*(grid[k] for k in keys))]
    if "points" in doc:
        if not isinstance(doc["points"], list) or not all(isinstance(p, dict) and p
                                                          for p in doc["points"]):
            raise InputError(path, "points", "must be a list of field mappings",
                             "e.g. points: [{server.max_batch: 8}]")
        points += doc["points"]
    for p in points:
        for key in p:
            if not isinstance(key, str) or len(key.split(".")) != 2 or not all(key.split(".")):
                raise InputError(path, str(key), "must be a section.field path",
                                 "e.g. server.max_wait_ms")
    return points


def point_name(point: dict[str, Any]) -> str:
    """A file name from a point's parameters (readable, with a short hash for uniqueness)."""
    text = ",".join(f"{k}={point[k]}" for k in sorted(point))
    readable = re.sub(r"[^A-Za-z0-9.=_-]+", "_", ",".join(
        f"{k.split('.')[1]}={point[k]}" for k in sorted(point)))[:120]
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def point_study(base: dict[str, Any], point: dict[str, Any], source: str):
    """The base study (a config mapping) with a point's fields set, validated."""
    return parse_config(apply_fields(base, point, source), f"{source} at {point}")


def run_point(base: dict[str, Any], point: dict[str, Any], study_dir: str, dest: str,
              source: str) -> str:
    """Run one point and write its result file atomically; returns its name. Runs in a
    worker process (everything it needs comes in its arguments)."""
    from offramp.analysis.study.config import naming_study
    from offramp.analysis.study.run import run_study

    cfg = point_study(base, point, source)
    with naming_study(f"{source} at {point}"):
        out = run_study(cfg, Path(study_dir))
    doc = {"point": point, "policy": out.policy_params, "replications": len(out.result.runs),
           "metrics": {k: {"mean": v["mean"], "ci95": v["ci95"]}
                       for k, v in out.result.summary.items()}}
    path = Path(dest)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, default=float) + "\n")
    return path.stem


def check_sweep(study: str | Path, grid: str | Path, out: str | Path, sets: list[str] = ()
                ) -> tuple[dict[str, Any], list[dict[str, Any]], list[str], Path]:
    """Everything checked before a point runs: the output folder, the base study (with
    ``--set`` items ``sets`` applied), the grid and every point as a study. Returns (base
    study mapping, points, names, folder)."""
    from offramp.analysis.study.overrides import study_with_sets
    from offramp.common.outputs import check_output_dir

    out = check_output_dir(out, SWEEP_OUTPUTS, "sweep folder")
    base = study_with_sets(study, sets)[0].model_dump(mode="json", exclude_unset=True)
    finished = Path(out) / "sweep.json"
    if finished.exists():
        before = json.loads(finished.read_text()).get("set", [])
        if before != list(sets):
            raise InputError(str(finished), "set", f"this sweep ran with --set {before}, not "
                             f"{list(sets)}", "use another -o folder, or the same --set")
    points = load_grid(grid)
    names = [point_name(p) for p in points]
    if len(set(names)) != len(names):
        raise InputError(grid, None, "lists the same point twice", "remove the duplicate")
    for p in points:
        point_study(base, p, str(grid))  # a bad point names the grid file it came from
    return base, points, names, out


def run_sweep(study: str | Path, grid: str | Path, out: str | Path, executor: Executor,
              progress: Callable[[int, int], None] | None = None, sets: list[str] = (),
              cost_per_replica_hour: float | None = None) -> pd.DataFrame:
    """Run every point not yet written under ``out``, then gather ``out/sweep.parquet`` (with
    a price, each point's cost per million requests at its throughput)."""
    base, points, names, out = check_sweep(study, grid, out, sets)
    folder = out / "points"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.json"):  # a point's temporary file a killed sweep left
        stale.unlink(missing_ok=True)
    todo = [(p, n) for p, n in zip(points, names, strict=True)
            if not (folder / f"{n}.json").exists()]
    done = len(points) - len(todo)
    if progress is not None:
        progress(done, len(points))
    futures = [executor.submit(run_point, base, p, str(Path(study).parent.resolve()),
                               str((folder / f"{n}.json").resolve()), str(grid))
               for p, n in todo]
    for fut in as_completed(futures):
        fut.result()
        done += 1
        if progress is not None:
            progress(done, len(points))
    frame = gather(folder, names)
    if cost_per_replica_hour is not None:
        from offramp.analysis.study.cost import cost_per_million

        replicas = (frame["server.replicas"] if "server.replicas" in frame
                    else [parse_config(base, str(study)).server.replicas] * len(frame))
        frame["cost_per_million"] = [cost_per_million(cost_per_replica_hour, int(r), float(t))
                                     for r, t in zip(replicas, frame["throughput_rps"],
                                                     strict=True)]
    with atomic_path(out / "sweep.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_path(out / "sweep.json") as tmp:
        tmp.write_text(json.dumps({"study": str(study), "grid": str(grid),
                                   "study_file": str(Path(study).resolve()),
                                   "grid_file": str(Path(grid).resolve()),
                                   "set": list(sets), "points": len(points),
                                   "cost_per_replica_hour": cost_per_replica_hour,
                                   "study_as_run": base, "command": command_line()},
                                  indent=1) + "\n")
    return frame


def gather(folder: Path, names: Iterable[str]) -> pd.DataFrame:
    """One row per point (in grid order): its fields, then each metric's mean and CI."""
    rows = []
    for name in names:
        doc = json.loads((folder / f"{name}.json").read_text())
        row = {"point": name, **doc["point"]}
        for metric, v in doc["metrics"].items():
            row[metric] = v["mean"]
            row[f"{metric}_ci95"] = v["ci95"]
        rows.append(row)
    return pd.DataFrame(rows)
