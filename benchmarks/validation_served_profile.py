"""Held-out check of a profile taken from served traffic (an experiment, not CI).

    .venv/bin/python benchmarks/validation_served_profile.py runs/validate-cpu OUT_DIR

Builds a profile from the validation folder's repeat-0 runs only: each (stage, batch size)
at the median (p99: the 99th percentile) of its real in-loop times, sizes not seen there
from the folder's in-loop profile, and a wake-up table from the real batches' time over that
prediction binned by the idle time before them. Then judges the simulation with it on
repeats 1.. only (written to OUT_DIR, a copy of the folder without repeat 0), with the study's
example file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from offramp.analysis.validation import batch_times
from offramp.profiling.format import LatencyProfile, load_profile, save_profile
from offramp.profiling.latency import LatencyModel
from offramp.profiling.real_runs import KIND_CODES

IDLE_MS = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0]


def main(src: str, dst: str) -> None:
    src_p, dst_p = Path(src), Path(dst)
    real = src_p / "real"
    manifest = json.loads((real / "manifest.json").read_text())
    base = load_profile(real / "profile.json")
    train = [r for r in manifest["runs"] if r["repeat"] == 0]
    times: dict[tuple[str, int, int], list[float]] = {}
    batches = []
    for run in train:
        z = np.load(real / run["file"])
        for kc, k, b, ms in zip(z["stage_kind"], z["stage_k"], z["stage_size"], z["stage_ms"],
                                strict=True):
            times.setdefault((KIND_CODES[kc], int(k), int(b)), []).append(float(ms))
        batches.append(z)
    rows = []
    for r in base.rows:
        ts = times.get((r["kind"], r["k"], r["batch"]))
        if ts and len(ts) >= 20:
            a = np.array(ts)
            r = {**r, "p50_ms": float(np.median(a)), "mean_ms": float(a.mean()),
                 "p99_ms": float(np.percentile(a, 99)), "std_ms": float(a.std()), "runs": a.size}
        rows.append(r)
    meta = {k: v for k, v in base.meta.items() if k not in ("in_loop_residual_ms", "wake_ms")}
    prof = LatencyProfile(rows=rows, meta={**meta, "produced_by": {
        "command": f"benchmarks/validation_served_profile.py {src} {dst} (repeat-0 traffic)"}})
    model = LatencyModel(prof)
    extra_by_bin: dict[int, list[float]] = {}
    edges = [0.0, *IDLE_MS]
    for z in batches:
        got, pred, idle = batch_times(z, model)
        which = np.minimum(np.digitize(idle, edges) - 1, len(IDLE_MS) - 1)
        for i in range(len(IDLE_MS)):
            extra_by_bin.setdefault(i, []).extend((got - pred)[which == i].tolist())
    wake = [round(max(0.0, float(np.median(extra_by_bin[i]))) if extra_by_bin.get(i) else 0.0, 6)
            for i in range(len(IDLE_MS))]
    top = max(r["batch"] for r in rows)
    prof.meta["wake_ms"] = {"batch": [1, top], "idle_ms": IDLE_MS, "extra_ms": [wake, wake]}
    prof.meta["in_loop_residual_ms"] = {}
    if dst_p.exists():
        shutil.rmtree(dst_p)
    shutil.copytree(src_p, dst_p, ignore=shutil.ignore_patterns("*-r0.npz", "*.parquet"))
    manifest["runs"] = [r for r in manifest["runs"] if r["repeat"] != 0]
    (dst_p / "real" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    save_profile(prof, dst_p / "real" / "profile.json")
    print("wake-up from traffic (ms) at idle", IDLE_MS, ":", wake)
    subprocess.run([sys.executable, "-m", "offramp.analysis", "validate",
                    "examples/validate-fmnist-entropy.yaml", "--real-from", str(dst_p)],
                   check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
