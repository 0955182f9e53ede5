"""What each piece of the in-loop cost model buys: re-judge one validation's real runs with
the model built up piece by piece (the real runs are not repeated).

    .venv/bin/python benchmarks/validation_ablation.py runs/validate-cpu20k [STUDY.yaml]

Each variant strips in-loop metadata from a copy of the folder's profile (or, for the served
model, sets the idle factors of its served-profile.json to 1) and re-runs the comparison (``offramp
validate --real-from --profiler-costs`` on a copy of the folder, with that profile); the last
variant is ``offramp validate --real-from`` as it runs by default (a served-cost table per load).
Prints, per variant, the cells outside the real spread and the median |error| of p50, mean and
p99 per load.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# (label, meta keys removed, in-loop residual fields removed, --isolated-stages, served idle
# factors kept): the first six simulate with the profiler's in-loop profile; the last two with
# the stage costs fitted on the folder's served streams (its served-profile.json), first with
# every idle factor set to 1, then as fitted; the last ("by-load") fits a table per load.
VARIANTS = [
    ("isolated stage times", [], [], True, None),
    ("in-loop p50 only", ["wake_ms", "stage_noise_corr", "batch_tail_ms"],
     ["served_p99_ms"], False, None),
    ("+ wake-up after idle", ["stage_noise_corr", "batch_tail_ms"], ["served_p99_ms"], False,
     None),
    ("+ per-batch tail", ["stage_noise_corr"], ["served_p99_ms"], False, None),
    ("+ in-loop p99", ["stage_noise_corr"], [], False, None),
    ("+ correlated noise (profiler's model)", [], [], False, None),
    ("served stage costs, no idle factors", [], [], False, False),
    ("+ idle factors (one table)", [], [], False, True),
    ("+ a table per load (served model)", [], [], False, "by-load"),
]
STATS = ("latency_p50_ms", "latency_mean_ms", "latency_p99_ms")


def variant_table(folder: Path, study: str, drop_meta, drop_fields, isolated: bool,
                  served: bool | str | None) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "v"
        shutil.copytree(folder, work, ignore=shutil.ignore_patterns("*.parquet", "*.png",
                                                                    "validation.json"))
        path = work / "real" / "profile.json"
        doc = json.loads(path.read_text())
        if served is not None and served != "by-load":
            doc = json.loads((folder / "served-profile.json").read_text())
            if not served:
                for f in doc["meta"]["served_costs"]["factor"].values():
                    f["idle"] = [1.0] * len(f["idle"])
        for key in drop_meta:
            doc["meta"].pop(key, None)
        for v in (doc["meta"].get("in_loop_residual_ms") or {}).values():
            for f in drop_fields:
                v.pop(f, None)
        path.write_text(json.dumps(doc))
        cmd = [sys.executable, "-m", "offramp.analysis.cli", "validate", study, "--real-from",
               str(work)] + (["--isolated-stages"] if isolated else []) + (
                   [] if served == "by-load" else ["--profiler-costs"])
        subprocess.run(cmd, check=True, capture_output=True)
        return json.loads((work / "validation.json").read_text())["table"]


def main(folder: str, study: str) -> None:
    folder = Path(folder)
    print(f"{'variant':34s} {'outside':>8s}  " + "  ".join(
        f"{s.split('_')[1]:>4s} err @30/60/90%" for s in STATS))
    for label, drop_meta, drop_fields, isolated, served in VARIANTS:
        if served is not None and not (folder / "served-profile.json").exists():
            continue
        table = variant_table(folder, study, drop_meta, drop_fields, isolated, served)
        outside = sum(not r["within"] for r in table)
        parts = []
        for stat in STATS:
            errs = []
            for load in (0.3, 0.6, 0.9):
                e = [abs(r["error"]) for r in table if r["stat"] == stat
                     and r["load"].get("utilisation") == load]
                errs.append(f"{100 * np.median(e):4.0f}" if e else "   -")
            parts.append("/".join(errs) + "%")
        print(f"{label:34s} {outside:4d}/{len(table):<3d}  " + "  ".join(
            f"{p:>17s}" for p in parts))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "examples/validate-fmnist-entropy.yaml")
