"""Plots of a run: latency distribution and where requests exit."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from offramp.traces.atomic import atomic_path  # noqa: E402


def save_png(fig, path: str | Path) -> Path:
    """Write a figure as PNG atomically (temp file, then rename) and close it."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_run(frame: pd.DataFrame, n_exits: int, slo_ms: float | None, path: Path) -> None:
    """Latency CDF (after warm-up) and exit distribution, side by side, as a PNG."""
    kept = frame[~frame["warmup"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for rep, grp in kept.groupby("replication"):
        lat = np.sort(grp["latency_ms"].to_numpy())
        ax1.plot(lat, np.arange(1, lat.size + 1) / lat.size, lw=1, label=f"replication {rep}")
    if slo_ms is not None:
        ax1.axvline(slo_ms, color="k", ls="--", lw=1, label=f"SLO {slo_ms:g} ms")
    ax1.set_xlabel("latency (ms)")
    ax1.set_ylabel("fraction of requests")
    ax1.set_title("Latency CDF")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    frac = np.bincount(kept["exit_index"], minlength=n_exits) / max(len(kept), 1)
    acc = kept.groupby("exit_index")["correct"].mean().reindex(range(n_exits))
    ax2.bar(range(n_exits), frac, color="tab:blue")
    for k in range(n_exits):
        if frac[k] > 0:
            ax2.text(k, frac[k], f"acc {acc[k]:.3f}", ha="center", va="bottom", fontsize=8)
    ax2.set_xticks(range(n_exits))
    ax2.set_xlabel("exit")
    ax2.set_ylabel("fraction of requests")
    ax2.set_title("Where requests exit")
    fig.tight_layout()
    save_png(fig, path)
