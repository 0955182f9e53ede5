"""How large the serving loop's own stages are against the segments, per batch size.

    .venv/bin/python benchmarks/loop_costs.py [PROFILE ...] [--plot docs/img/loop-costs.png]

For each profile (default: the shipped CPU profiles) and batch size: the p50 of the whole
backbone (every segment), of every exit check, every handoff and the per-batch overhead, and
each as a percentage of the backbone. Prints a table; ``--plot`` draws the percentages.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from offramp.profiling.format import load_profile
from offramp.profiling.shipped import shipped_profile_path

SHOW = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def loop_costs(path: str) -> tuple[str, list[dict]]:
    prof = load_profile(shipped_profile_path(path) if not Path(path).exists() else path)
    p50 = {(r["kind"], r["k"], r["batch"]): r["p50_ms"] for r in prof.rows}
    k = prof.n_exits
    out = []
    for b in sorted({r["batch"] for r in prof.rows}):
        seg = sum(p50[("segment", j, b)] for j in range(k))
        row = {"batch": b, "segments_ms": seg,
               "checks_ms": sum(p50.get(("check", j, b), 0.0) for j in range(k - 1)),
               "handoffs_ms": sum(p50.get(("handoff", j, b), 0.0) for j in range(k - 1)),
               "overhead_ms": p50.get(("overhead", 0, b), 0.0)}
        for key in ("checks", "handoffs", "overhead"):
            row[f"{key}_pct"] = 100 * row[f"{key}_ms"] / seg
        out.append(row)
    return prof.model_id, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profiles", nargs="*", default=["fmnist-resnet-cpu", "rt-minilm6-cpu"])
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    results = {name: loop_costs(name) for name in args.profiles}
    for name, (model, rows) in results.items():
        print(f"\n{name} ({model}): p50 ms, and % of all segments")
        print(f"{'batch':>5} {'segments':>9} {'checks':>14} {'handoffs':>14} {'overhead':>14}")
        for r in rows:
            if r["batch"] in SHOW:
                print(f"{r['batch']:>5} {r['segments_ms']:>9.3f} "
                      + " ".join(f"{r[k + '_ms']:>7.3f} {r[k + '_pct']:>5.1f}%"
                                 for k in ("checks", "handoffs", "overhead")))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from offramp.analysis.report.plots import save_png

        fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
        for ax, (name, (_, rows)) in zip(axes[0], results.items(), strict=True):
            b = [r["batch"] for r in rows]
            for key, style in (("checks", "-"), ("handoffs", "--"), ("overhead", ":")):
                ax.plot(b, [r[key + "_pct"] for r in rows], style, label=f"all {key}"
                        if key != "overhead" else "per-batch overhead")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch size")
            ax.set_ylabel("% of the whole backbone's time (p50)")
            ax.set_title(f"{name}: the serving loop's own stages")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        save_png(fig, args.plot)
        print(f"\nwrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
