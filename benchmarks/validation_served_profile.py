"""Held-out check of the served-cost model on a validation folder without served streams
(an experiment, not CI).

    .venv/bin/python benchmarks/validation_served_profile.py runs/validate-cpu20k OUT_DIR

Copies the folder to OUT_DIR with every repeat-0 run turned into that (mode, load)'s served
stream (``real/served-*.npz``), so the served-cost fit (``profiling/served.py``) sees repeat 0
only and the simulation is judged on repeats 1.. only, with the study's example file. (The
served streams ``offramp validate`` now serves have arrivals of their own; here repeat 0
shares its arrivals with the other repeats.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


def main(src: str, dst: str) -> None:
    src_p, dst_p = Path(src), Path(dst)
    manifest = json.loads((src_p / "real" / "manifest.json").read_text())
    if dst_p.exists():
        shutil.rmtree(dst_p)
    shutil.copytree(src_p, dst_p, ignore=shutil.ignore_patterns("*-r0.npz", "*.parquet",
                                                                "served-*"))
    served = []
    for run in manifest["runs"]:
        if run["repeat"] == 0:
            name = f"served-{run['key']}.npz"
            shutil.copy(src_p / "real" / run["file"], dst_p / "real" / name)
            served.append({**run, "file": name})
    manifest["runs"] = [r for r in manifest["runs"] if r["repeat"] != 0]
    manifest["served"] = served
    (dst_p / "real" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    subprocess.run([sys.executable, "-m", "offramp.analysis", "validate",
                    "examples/validate-fmnist-entropy.yaml", "--real-from", str(dst_p)],
                   check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
