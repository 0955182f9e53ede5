"""Re-level a profile's served table on some of the streams a kept calibration folder holds
(``offramp profile calibrate ... --keep-runs DIR``): e.g. on its ``shrink`` streams alone, to
compare with the re-levelling on all of them, made from the very same minutes of serving.

    .venv/bin/python benchmarks/relevel_from_runs.py DIR PROFILE OUT.json --modes shrink

``DIR`` may also be a validation folder: ``--key shrink-L0 --repeat 0`` keeps that one judged
run (no served stream; the re-levelling stream, whose cell is then not held out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from offramp.analysis.validation.served import served_runs
from offramp.profiling.format import LatencyProfile, save_profile
from offramp.profiling.served_level import relevel
from offramp.profiling.shipped import resolve_profile
from offramp.traces.shipped import load_shipped


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("profile")
    ap.add_argument("output", type=Path)
    ap.add_argument("--modes", required=True, help="comma-separated exit modes to keep")
    ap.add_argument("--key", help="only the streams of this cell (e.g. shrink-L0)")
    ap.add_argument("--repeat", type=int, help="only this repeat of it")
    args = ap.parse_args()
    modes = set(args.modes.split(","))
    manifest = json.loads((args.folder / "real" / "manifest.json").read_text())
    one = args.key is not None or args.repeat is not None  # judged runs only, then
    streams = [s for s in ([] if one else manifest.get("served", [])) + manifest["runs"]
               if manifest["streams"][s["key"]]["mode"] in modes
               and args.key in (None, s["key"]) and args.repeat in (None, s["repeat"])]
    base = resolve_profile(args.profile)
    runs = served_runs(args.folder, streams, load_shipped(base.meta["model_id"]))
    served = relevel(base.meta["served_costs"], runs, [s["file"] for s in streams],
                     {"modes": sorted(modes), "from": str(args.folder)})
    save_profile(LatencyProfile(rows=base.rows, meta={**base.meta, "served_costs": served}),
                 args.output)
    print(f"wrote {args.output}: {len(streams)} streams of modes {sorted(modes)}")


if __name__ == "__main__":
    main()
