"""Refit a calibration from the real runs it kept (``offramp profile calibrate --keep-runs``)
with the current served-cost fit, and print what the fit gives (noise correlation, idle
factors); with ``-o``, write the profile so a held-out folder can be re-judged on it:

    python benchmarks/refit_calibration.py runs/cal-030-shrink-runs -o runs/cal-refit.json
    cp runs/cal-refit.json runs/heldout-loads/real/profile.json
    offramp validate examples/validate-fmnist-entropy.yaml --real-from runs/heldout-loads \\
        --profiler-costs

(the numbers of the served-fit fixes of 2026-12-06 in docs/validation.md came from this).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from offramp.analysis.validation.compare import read_real_side, served_profile
from offramp.profiling.format import LatencyProfile, save_profile
from offramp.profiling.shipped import resolve_profile
from offramp.traces.format import load_trace
from offramp.traces.shipped import resolve_trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, help="the folder --keep-runs wrote")
    ap.add_argument("--profile", default="fmnist-resnet-cpu", help="the base profile")
    ap.add_argument("--trace", default="fmnist-resnet")
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args()
    base = resolve_profile(args.profile)
    _, manifest = read_real_side(args.runs)
    pooled = {**manifest, "served": manifest.get("served", []) + manifest["runs"]}
    work = Path(tempfile.mkdtemp()) / "w"  # the fit writes beside the runs: not in the original
    shutil.copytree(args.runs, work)
    fitted = served_profile(work, base, pooled, load_trace(resolve_trace(args.trace)))
    served = fitted.meta["served_costs"]
    print(json.dumps({"noise_corr": served["noise_corr"],
                      "idle_factors": {k: v["idle"] for k, v in served["factor"].items()}}))
    if args.output:
        save_profile(LatencyProfile(rows=base.rows, meta={**base.meta, "served_costs": served},
                                    source=str(args.output)), args.output)
        print(f"wrote {args.output}")
    shutil.rmtree(work.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
