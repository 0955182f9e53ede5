"""Each real stage's time over the in-loop profile's p50, by the loop's idle time before the
batch (median over every stage of every run of a validation folder).

    .venv/bin/python benchmarks/validation_stages.py runs/validate-cpu20k
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from offramp.core.modes import CostModel, StageKind
from offramp.profiling.format import load_profile
from offramp.profiling.latency import LatencyModel

BINS = (("back to back", 0.0, 0.1), ("after 0.1-5 ms idle", 0.1, 5.0),
        ("after >= 5 ms idle", 5.0, np.inf))


def main(folder: str) -> None:
    real = Path(folder) / "real"
    model = LatencyModel(load_profile(real / "profile.json"), costs=CostModel.IN_LOOP)
    manifest = json.loads((real / "manifest.json").read_text())
    ratios: dict[tuple[str, str], list[float]] = {}
    for run in manifest["runs"]:
        z = np.load(real / run["file"])
        idle = 1000 * np.r_[1.0, z["batch_dispatch"][1:] - z["batch_finish"][:-1]]
        for kc, k, size, ms, b in zip(z["stage_kind"], z["stage_k"], z["stage_size"],
                                      z["stage_ms"], z["stage_batch"], strict=True):
            kind = StageKind.from_code(kc)
            pred = model.lookup(kind, int(k), int(size))[0]
            label = next(name for name, lo, hi in BINS if lo <= idle[b] < hi)
            if pred > 0:
                ratios.setdefault((kind, label), []).append(ms / pred)
    print("| stage | " + " | ".join(name for name, _, _ in BINS) + " |")
    print("|---|" + "---|" * len(BINS))
    for kind in StageKind:
        cells = [f"{np.median(ratios[kind, name]):.2f}x" if (kind, name) in ratios else "-"
                 for name, _, _ in BINS]
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
