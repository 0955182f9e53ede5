"""The figure of docs/validation.md's re-levelling section: per model, each operating point's
p50 and p99 error with the shipped calibration and with it re-levelled, against the real
spread and the goals (5% p50, 10% p99).

    .venv/bin/python benchmarks/relevel_plot.py OUT.png \
        fmnist A/validation.json B/validation.json minilm C/validation.json D/validation.json
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from relevel_table import cells  # noqa: E402

from offramp.analysis.report.plots import save_png  # noqa: E402

STATS = (("latency_p50_ms", "p50", 0.05), ("latency_p99_ms", "p99", 0.10))


def panel(ax, name: str, a: dict, b: dict) -> None:  # noqa: ANN001
    points = sorted({(k[0], k[1]) for k in a})
    x = np.arange(len(points))
    for j, (stat, _, goal) in enumerate(STATS):
        off = (j - 0.5) * 0.4
        spread = np.array([a[(*p, stat)]["spread"] for p in points])
        band = np.maximum(spread, goal) * 100
        ax.bar(x + off, 2 * band, bottom=-band, width=0.36, color="0.9", edgecolor="0.75",
               label="max(goal, real spread)" if j == 0 else None)
        for judged, marker, color, what in ((a, "o", "tab:red", "shipped calibration"),
                                            (b, "D", "tab:blue", "re-levelled today")):
            err = np.array([judged[(*p, stat)]["error"] for p in points]) * 100
            ax.scatter(x + off, err, marker=marker, color=color, s=28, zorder=3,
                       label=f"{what}" if j == 0 else None)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [f"{m} {load:.0%}\np50 | p99" for load, m in points], fontsize=8)
    ax.set_ylabel("simulated − real, % of real")
    ax.set_title(name, fontsize=10)


def main() -> None:
    out, rest = sys.argv[1], sys.argv[2:]
    groups = [rest[i:i + 3] for i in range(0, len(rest), 3)]
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 3.6 * len(groups)))
    for ax, (name, a, b) in zip(np.atleast_1d(axes), groups, strict=True):
        panel(ax, name, cells(a), cells(b))
    np.atleast_1d(axes)[0].legend(fontsize=8, loc="upper left", ncol=3)
    fig.suptitle("Each cell's error, p50 (left) and p99 (right): the shipped calibration "
                 "(2026-12-06) and it re-levelled on 30% shrink streams just before (2026-12-07)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    save_png(fig, out)


if __name__ == "__main__":
    main()
