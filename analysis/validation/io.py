"""Reading a validation folder: the plan, the real runs' manifest and each run's arrays, checked
(one :class:`InputError` naming the file and field where something is wrong)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from offramp.common.errors import InputError
from offramp.core.plan import PlanError, ValidationPlan
from offramp.sim.records import RunRecords
from offramp.traces.format import ExitTrace

RUN_ARRAYS = ("arrival", "sample", "dispatch", "finish", "exit", "pred", "batch",
              "batch_dispatch", "batch_finish", "batch_sizes", "batch_reason", "stage_batch",
              "stage_kind", "stage_k", "stage_size", "stage_ms")


def _json_file(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InputError(path.parent, None, f"is not a validation folder (no {path.name})",
                         "pass a folder written by offramp validate (--real-only)")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"the {what} is not JSON ({exc})",
                         "rerun the real side (offramp validate --real-only)") from None


def read_real_side(plan_dir: Path) -> tuple[ValidationPlan, dict[str, Any]]:
    """The plan and the real runs' manifest of a validation folder, checked."""
    if not plan_dir.is_dir():
        raise InputError(plan_dir, None, "is not a validation folder",
                         "pass a folder written by offramp validate (--real-only)")
    try:
        plan = ValidationPlan.from_dict(_json_file(plan_dir / "plan.json", "plan"))
    except PlanError as exc:
        raise InputError(plan_dir / "plan.json", exc.field, exc.problem,
                         "rerun offramp validate") from None
    real_dir = plan_dir / "real"
    if not (real_dir / "profile.json").is_file():
        raise InputError(real_dir, None, "no real runs here (manifest.json and profile.json)",
                         "run the real side first (offramp validate without --real-from)")
    manifest = _json_file(real_dir / "manifest.json", "manifest")
    src = real_dir / "manifest.json"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("streams"), dict) \
            or not isinstance(manifest.get("runs"), list):
        raise InputError(src, "streams", "must hold streams (a mapping) and runs (a list)",
                         "rerun the real side")
    if not manifest["runs"]:
        raise InputError(src, "runs", "no real run has finished yet", "run the real side")
    for i, run in enumerate(manifest["runs"]):
        if not isinstance(run, dict) or not all(k in run for k in ("file", "key", "repeat")):
            raise InputError(src, f"runs[{i}]", "must name file, key and repeat",
                             "rerun the real side")
        stream = manifest["streams"].get(run["key"])
        if not isinstance(stream, dict) or not all(k in stream for k in
                                                   ("mode", "arrivals", "load", "rate_rps")):
            raise InputError(src, f"streams.{run['key']}", "missing or incomplete",
                             "rerun the real side")
    return plan, manifest


def read_run(path: Path, trace: ExitTrace) -> dict[str, np.ndarray]:
    """One real run's arrays, checked: every array there, samples from the test split."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {n: z[n] for n in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(path, None, f"not a readable real run ({exc})".replace("\n", " "),
                         "rerun the real side (its runs are resumable)") from None
    missing = [n for n in RUN_ARRAYS if n not in data]
    if missing:
        raise InputError(path, missing[0], "array missing", "rerun the real side")
    n = data["arrival"].size
    if any(data[k].shape[:1] != (n,) for k in ("sample", "dispatch", "finish", "exit", "batch")):
        raise InputError(path, "sample", "per-request arrays of different lengths",
                         "rerun the real side")
    if not np.isin(data["sample"], trace.indices("test")).all():
        raise InputError(path, "sample", "holds samples outside the trace's test split",
                         "compare with the trace the real runs were made for")
    return data


def real_records(run: dict[str, np.ndarray]) -> RunRecords:
    """A real run as the simulator's records (one replica)."""
    nb = run["batch_dispatch"].size
    return RunRecords(arrival=run["arrival"], sample=run["sample"], dispatch=run["dispatch"],
                      finish=run["finish"], exit=run["exit"],
                      replica=np.zeros(run["arrival"].size, dtype=np.int64), batch=run["batch"],
                      batch_replica=np.zeros(nb, dtype=np.int64),
                      batch_dispatch=run["batch_dispatch"], batch_finish=run["batch_finish"],
                      batch_sizes=run["batch_sizes"])
