"""How fast the real loop ran one stage, stream after stream (an experiment, not CI).

    .venv/bin/python benchmarks/stage_level_over_time.py OUT.png FOLDER [FOLDER ...] \
        [--kind segment --k 0 --size 1] [--label calibration=cal- ...]

For every stream a validation or calibration folder keeps (``real/*.npz``), the median time of
one stage (default: segment 0 at a batch of one, the stage every stream runs most) against
when the stream ended (the file's modification time, UTC: run it on the folders as served, not
on copies). Prints one line per stream and
draws them in time order, streams whose path holds a ``--label`` pattern marked apart (e.g.
the calibration streams among the judged ones). Shows whether the machine held its speed
between a calibration and the runs judged against it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from offramp.core.modes import StageKind


def stage_median(path: Path, kind: StageKind, k: int, size: int) -> tuple[float, int]:
    """(median ms, count) of stage (kind, k) at batch ``size`` in one stream's file."""
    with np.load(path) as z:
        sel = (z["stage_kind"] == kind.code) & (z["stage_k"] == k) & (z["stage_size"] == size)
        ms = z["stage_ms"][sel]
    return (float(np.median(ms)) if ms.size else float("nan")), int(ms.size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("output", type=Path)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--kind", default="segment")
    ap.add_argument("--k", type=int, default=0)
    ap.add_argument("--size", type=int, default=1)
    ap.add_argument("--label", action="append", default=[],
                    help="NAME=PATTERN: streams whose path contains PATTERN are drawn as NAME")
    args = ap.parse_args()
    kind = StageKind(args.kind)
    if any("=" not in x for x in args.label):
        ap.error("--label takes NAME=PATTERN")
    labels = [tuple(x.split("=", 1)) for x in args.label]
    rows = []
    for folder in args.folders:
        for f in sorted((folder / "real").glob("*.npz")):
            ms, n = stage_median(f, kind, args.k, args.size)
            name = next((lab for lab, pat in labels if pat in str(f)), "judged")
            rows.append((f.stat().st_mtime, ms, n, name, f))
    if not rows:
        ap.error("no real/*.npz in the folders given")
    rows.sort()
    for t, ms, n, name, f in rows:
        print(f"{time.strftime('%H:%M:%S', time.gmtime(t))} {ms:.3f} ms (n={n}) {name:12s} {f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    t0 = rows[0][0]
    for name in dict.fromkeys(r[3] for r in rows):
        pts = [(r[0] - t0, r[1]) for r in rows if r[3] == name]
        ax.plot([p[0] / 60 for p in pts], [p[1] for p in pts], "o", ms=4, label=name)
    ax.set_xlabel(f"minutes since {time.strftime('%H:%M:%S', time.gmtime(t0))} UTC")
    ax.set_ylabel(f"median {kind.value} {args.k} at batch {args.size} (ms)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
