"""Does the served streams' length matter? Re-judge a validation folder with every served
stream cut to its first N requests (an experiment, not CI; the real runs are not repeated).

    .venv/bin/python benchmarks/validation_served_length.py runs/validate-keep90-long 2000,20000

For each N: links the folder's files into a scratch folder, writes each served stream's first
whole batches holding at most N requests, runs ``offramp validate --real-from`` on it with the
study's example file (a served-cost table per load, the default) and prints the cells outside
and the error of p50, mean, p99 and busy fraction per (mode, load).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PER_REQUEST = ("arrival", "sample", "dispatch", "finish", "exit", "pred", "batch")
PER_BATCH = ("batch_dispatch", "batch_finish", "batch_sizes", "batch_reason")
PER_STAGE = ("stage_batch", "stage_kind", "stage_k", "stage_size", "stage_ms")
STATS = ("latency_p50_ms", "latency_mean_ms", "latency_p99_ms", "utilisation")


def cut(src: Path, dst: Path, n: int) -> None:
    """Write the first whole batches of served stream ``src`` holding at most ``n`` requests."""
    with np.load(src) as z:
        data = {k: z[k] for k in z.files}
    sizes = data["batch_sizes"][:, 0]
    keep_b = int(np.searchsorted(np.cumsum(sizes), n, side="right"))
    out = dict(data)
    for k in PER_REQUEST:
        out[k] = data[k][data["batch"] < keep_b]
    for k in PER_BATCH:
        out[k] = data[k][:keep_b]
    pick = data["stage_batch"] < keep_b
    for k in PER_STAGE:
        out[k] = data[k][pick]
    np.savez(dst, **out)


def judge(folder: Path, n: int, study: str) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "v"
        (work / "real").mkdir(parents=True)
        for name in ("plan.json", "inputs.npz", "exit_table.npy"):
            if (folder / name).exists():
                shutil.copy(folder / name, work / name)
        manifest = json.loads((folder / "real" / "manifest.json").read_text())
        served = {s["file"] for s in manifest.get("served", [])}
        for f in (folder / "real").iterdir():
            if f.name in served:
                cut(f, work / "real" / f.name, n)
            else:
                (work / "real" / f.name).symlink_to(f.resolve())
        subprocess.run([sys.executable, "-m", "offramp.analysis.cli", "validate", study,
                        "--real-from", str(work)], check=True, capture_output=True)
        return json.loads((work / "validation.json").read_text())["table"]


def main(folder: str, sizes: str, study: str) -> None:
    for n in (int(x) for x in sizes.split(",")):
        table = judge(Path(folder), n, study)
        outside = sum(not r["within"] for r in table)
        print(f"served streams cut to {n} requests: {outside}/{len(table)} cells outside")
        for key in dict.fromkeys(r["key"] for r in table):
            row = {r["stat"]: r for r in table if r["key"] == key}
            print(f"  {key:10s} " + "  ".join(
                f"{s.split('_')[-2] if s != 'utilisation' else 'busy'} "
                f"{100 * row[s]['error']:+.0f}%{'' if row[s]['within'] else '!'}"
                for s in STATS))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2],
         sys.argv[3] if len(sys.argv) > 3 else "examples/validate-fmnist-entropy.yaml")
