"""Re-fill a calibrated profile's served-cost sizes that its streams did not serve often enough
with the current rule (profiling/served.py::fill_rows: the served/profile ratio of the
nearest sizes served, not the kind's median ratio). The trusted rows, idle factors and noise
are unchanged; the profile is rewritten atomically.

    .venv/bin/python benchmarks/refill_served_profile.py profiling/data/fmnist-resnet-cpu.json
"""

from __future__ import annotations

import sys

from offramp.core.modes import CostModel
from offramp.profiling.format import LatencyProfile, load_profile, save_profile
from offramp.profiling.latency import LatencyModel
from offramp.profiling.served import refill


def main(path: str) -> None:
    profile = load_profile(path)
    served = profile.meta.get("served_costs")
    if not served:
        sys.exit(f"{path}: no served_costs to refill")
    base = LatencyModel(profile, costs=CostModel.IN_LOOP)
    new = refill(served, lambda kind, k, b: base.lookup(kind, k, b)[0])
    changed = sum(a != b for key in served["stages"]
                  for a, b in zip(served["stages"][key], new["stages"][key], strict=True))
    new["refilled"] = "untrusted sizes re-filled by profiling/served.py::fill_rows (2026-12-06)"
    save_profile(LatencyProfile(rows=profile.rows, meta={**profile.meta, "served_costs": new}),
                 path)
    print(f"{path}: {changed} rows re-filled")


if __name__ == "__main__":
    main(sys.argv[1])
