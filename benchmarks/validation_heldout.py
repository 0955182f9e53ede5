"""Judge a validation folder's simulation on its later repeats only (an experiment, not CI).

    .venv/bin/python benchmarks/validation_heldout.py runs/validate-cpu-s1 OUT_DIR 2

Links the folder's files into OUT_DIR with a manifest that keeps every served stream but only
the repeats numbered FROM and up, then runs ``offramp validate --real-from OUT_DIR`` with the
study's example file: the cells of repeats that model choices were made on stay out.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


def main(src: str, dst: str, first: int) -> None:
    src_p, dst_p = Path(src).resolve(), Path(dst)
    if dst_p.exists():
        shutil.rmtree(dst_p)
    (dst_p / "real").mkdir(parents=True)
    for name in ("plan.json", "inputs.npz", "exit_table.npy"):
        if (src_p / name).exists():
            shutil.copy(src_p / name, dst_p / name)
    for f in (src_p / "real").iterdir():
        if f.name != "manifest.json":
            (dst_p / "real" / f.name).symlink_to(f)
    manifest = json.loads((src_p / "real" / "manifest.json").read_text())
    manifest["runs"] = [r for r in manifest["runs"] if r["repeat"] >= first]
    (dst_p / "real" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    subprocess.run([sys.executable, "-m", "offramp.analysis", "validate",
                    "examples/validate-fmnist-entropy.yaml", "--real-from", str(dst_p)],
                   check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
