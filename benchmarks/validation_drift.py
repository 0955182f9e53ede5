"""How a stream's stage costs move over its own duration (an experiment, not CI).

    .venv/bin/python benchmarks/validation_drift.py runs/validate-cpu-s1

For every served stream and every repeat of a validation folder, each segment's and head's
time over what the folder's pooled served model (``served-profile.json``: the stage's p50 at
that batch size times the idle factor before its batch) predicts for it, as the median log
ratio in windows of time since the stream began and over the whole stream ("all"); averaged
over the repeats per mode and load. Negative: faster than the model. Shows whether a stream
speeds up the longer the loop stays busy, which served streams too short to reach that point
cannot see.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import numpy as np

from offramp.core.modes import CostModel, StageKind
from offramp.profiling.format import load_profile
from offramp.profiling.latency import LatencyModel
from offramp.profiling.served import idle_before, idle_bin

EDGES_S = (0.0, 1.0, 3.5, 7.0, 12.0, 20.0, 30.0, 45.0, float("inf"))


def residuals(path: Path, model: LatencyModel, factor: np.ndarray) -> tuple:
    """(log real/predicted per stage, stage kind code, seconds since the stream began)."""
    z = np.load(path)
    sb = z["stage_batch"].astype(np.int64)
    kind, k, b = z["stage_kind"].astype(np.int64), z["stage_k"], z["stage_size"]
    cache: dict[tuple[int, int, int], float] = {}
    p50 = np.empty(sb.size)
    for i, key in enumerate(zip(kind.tolist(), k.tolist(), b.tolist(), strict=True)):
        if key not in cache:
            cache[key] = model.lookup(StageKind.from_code(key[0]), key[1], key[2])[0]
        p50[i] = cache[key]
    idle = idle_before(z["batch_dispatch"], z["batch_finish"])[sb]
    pred = p50 * factor[kind, idle_bin(idle)]
    t = z["batch_dispatch"][sb] - z["arrival"].min()
    return np.log(z["stage_ms"] / pred), kind, t


def main(folder: str) -> None:
    folder = Path(folder)
    profile = load_profile(folder / "served-profile.json")
    model = LatencyModel(profile, costs=CostModel.SERVED)
    table = profile.meta["served_costs"]["factor"]
    factor = np.array([table[kind]["idle"] for kind in StageKind])
    manifest = json.loads((folder / "real" / "manifest.json").read_text())
    acc: dict[tuple, list[float]] = collections.defaultdict(list)
    for typ, entries in (("served", manifest.get("served", [])), ("repeat", manifest["runs"])):
        for e in entries:
            r, kind, t = residuals(folder / "real" / e["file"], model, factor)
            window = np.searchsorted(EDGES_S, t, side="right") - 1
            for kc in (1, 2):
                for w in range(len(EDGES_S)):  # the last: the whole stream
                    pick = (kind == kc) & ((window == w) | (w == len(EDGES_S) - 1))
                    if pick.sum() >= 200:
                        acc[(StageKind.from_code(kc), typ, e["mode"], e["load"], w)].append(
                            float(np.median(r[pick])))
    heads = [f"{EDGES_S[w]:g}-{EDGES_S[w + 1]:g}s" for w in range(len(EDGES_S) - 1)] + ["all"]
    print(f"{'stage':8s} {'stream':7s} {'mode':6s} load " + " ".join(f"{h:>8s}" for h in heads))
    for kind in (kind for kind in StageKind if kind.is_model):
        for typ in ("served", "repeat"):
            for li in sorted({e["load"] for e in manifest["runs"]}):
                for mode in dict.fromkeys(e["mode"] for e in manifest["runs"]):
                    cells = [acc.get((kind, typ, mode, li, w)) for w in range(len(heads))]
                    print(f"{kind:8s} {typ:7s} {mode:6s} L{li}   " + " ".join(
                        f"{np.mean(c):+8.3f}" if c else f"{'-':>8s}" for c in cells))


if __name__ == "__main__":
    main(sys.argv[1])
