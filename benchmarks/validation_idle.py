"""Real batch time over the prediction, binned by how long the loop idled before the batch.

    .venv/bin/python benchmarks/validation_idle.py runs/validate-cpu [--isolated]

Reads a validation folder's real runs and its in-loop profile; the prediction is each batch's
stages at the profile's p50 (in-loop costs unless --isolated; no wake-up cost, so what remains
is what the wake-up table has to explain).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from offramp.analysis.validation.compare import batch_times
from offramp.profiling.format import load_profile
from offramp.profiling.latency import LatencyModel

BINS_MS = [0, 0.1, 0.5, 1, 2, 5, 10, 1000]


def main(folder: str, isolated: bool) -> None:
    real = Path(folder) / "real"
    manifest = json.loads((real / "manifest.json").read_text())
    model = LatencyModel(load_profile(real / "profile.json"), costs="isolated" if isolated else "in_loop")
    acc: dict[int, list] = {}
    for run in manifest["runs"]:
        z = np.load(real / run["file"])
        got, pred, idle_ms = batch_times(z, model)
        which = np.minimum(np.digitize(idle_ms, BINS_MS) - 1, len(BINS_MS) - 2)
        for i in np.unique(which):
            sel = which == i
            acc.setdefault(int(i), []).append(np.c_[got[sel] - pred[sel], got[sel] / pred[sel],
                                                    z["batch_sizes"][sel, 0]])
    for i in sorted(acc):
        a = np.concatenate(acc[i])
        print(f"idle {BINS_MS[i]:6.1f}-{BINS_MS[i + 1]:6.1f} ms: {len(a):6d} batches, extra "
              f"median {np.median(a[:, 0]):.3f} ms, ratio {np.median(a[:, 1]):.2f}, mean batch "
              f"{a[:, 2].mean():.1f}")


if __name__ == "__main__":
    main(sys.argv[1], "--isolated" in sys.argv)
