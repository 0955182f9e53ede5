"""What a sweep's table shows best: the fields the grid varies, the best points, and plots that
fit the grid (a heatmap for two swept numbers, lines for one, p99 against throughput only where
throughput varies), one panel per value of the swept categories (small multiples)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SECTIONS = ("trace", "profile", "workload", "server", "policy", "slo", "run")
METRICS = ("throughput_rps", "latency_p50_ms", "latency_p99_ms", "accuracy", "slo_attainment",
           "cost_per_million")


def grid_fields(frame: pd.DataFrame) -> list[str]:
    """The study fields that are columns of the sweep (``section.field``)."""
    return [c for c in frame.columns if "." in c and c.split(".")[0] in SECTIONS]


def swept(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, categorical) fields that take more than one value."""
    num, cat = [], []
    for f in grid_fields(frame):
        if frame[f].nunique(dropna=False) < 2:
            continue
        (num if pd.api.types.is_numeric_dtype(frame[f]) and not pd.api.types.is_bool_dtype(
            frame[f]) else cat).append(f)
    return num, cat


def best_points(frame: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` points with the lowest p99 (those meeting the study's SLO first, where it has
    one), with the fields the grid varies and the main metrics."""
    num, cat = swept(frame)
    order = frame.assign(_miss=-(frame["slo_attainment"] if "slo_attainment" in frame else 0.0))
    order = order.sort_values(["_miss", "latency_p99_ms", "point"] if "slo_attainment" in frame
                              else ["latency_p99_ms", "point"])
    cols = [*num, *cat, *(m for m in METRICS if m in frame.columns)]
    return order.head(n)[cols].reset_index(drop=True)


def _label(row: pd.Series, fields: list[str]) -> str:
    return ", ".join(f"{f.split('.')[1]}={row[f]:g}" if isinstance(row[f], float) else
                     f"{f.split('.')[1]}={row[f]}" for f in fields)


def _panels(frame: pd.DataFrame, cat: list[str]) -> list[tuple[str, pd.DataFrame]]:
    if not cat:
        return [("", frame)]
    return [(", ".join(f"{f.split('.')[1]}={v}" for f, v in zip(cat, key if isinstance(key, tuple)
                                                               else (key,), strict=True)), grp)
            for key, grp in frame.groupby(cat, sort=True)]


def heatmaps(frame: pd.DataFrame, x: str, y: str, cat: list[str], metric: str = "latency_p99_ms"):
    """One annotated heatmap of ``metric`` over (x, y) per value of the categorical fields."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    panels = _panels(frame, cat)
    vals = frame[metric].to_numpy(dtype=float)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    norm = LogNorm(vals.min(), vals.max()) if vals.size and vals.max() > vals.min() else None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1, 3.8), squeeze=False)
    for ax, (title, grp) in zip(axes[0], panels, strict=True):
        table = grp.pivot_table(index=y, columns=x, values=metric, aggfunc="mean")
        # Yellow is good: low latency, high throughput.
        cmap = "viridis" if metric == "throughput_rps" else "viridis_r"
        im = ax.imshow(table.to_numpy(dtype=float), origin="lower", aspect="auto", cmap=cmap,
                       norm=norm)
        for (i, j), v in np.ndenumerate(table.to_numpy(dtype=float)):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7,
                        color="white" if norm is not None and (norm(v) > 0.5) == (
                            cmap == "viridis_r") else "black")
        ax.set_xticks(range(table.shape[1]), [f"{c:g}" for c in table.columns])
        ax.set_yticks(range(table.shape[0]), [f"{r:g}" for r in table.index])
        ax.set_xlabel(x)
        if ax is axes[0][0]:
            ax.set_ylabel(y)
        ax.set_title(title or metric, fontsize=9)
    from matplotlib.ticker import FuncFormatter

    bar = fig.colorbar(im, ax=axes[0].tolist(), label=metric)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    if norm is not None and norm.vmax >= 10 * norm.vmin:  # over a decade: ticks 1, 2, 5 x 10^k
        from matplotlib.ticker import LogLocator, NullFormatter

        bar.ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        bar.ax.yaxis.set_minor_formatter(plain)
    bar.ax.yaxis.set_major_formatter(plain)
    return fig


def lines(frame: pd.DataFrame, x: str, cat: list[str], metrics=("latency_p50_ms", "latency_p99_ms")):
    """Each metric against one swept number, a line per value of the categorical fields."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for title, grp in _panels(frame, cat):
            grp = grp.sort_values(x)
            ax.plot(grp[x], grp[metric], marker="o", label=title or None)
            for _, r in grp.iterrows():
                ax.annotate(f"{r[metric]:.3g}", (r[x], r[metric]), fontsize=7,
                            textcoords="offset points", xytext=(0, 4), ha="center")
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if cat:
            ax.legend(fontsize=7)
    return fig


def throughput_varies(frame: pd.DataFrame, rel: float = 0.05) -> bool:
    """Whether throughput differs by more than ``rel`` across points (a p99-vs-throughput plot
    of points at one load is a vertical line)."""
    t = frame["throughput_rps"].to_numpy(dtype=float)
    return bool(t.size and np.nanmax(t) > (1 + rel) * np.nanmin(t))


def tradeoff(frame: pd.DataFrame, num: list[str], cat: list[str]):
    """p99 against throughput, points labelled with their swept fields."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for title, grp in _panels(frame, cat):
        ax.scatter(grp["throughput_rps"], grp["latency_p99_ms"], s=18, label=title or None)
        for _, r in (grp.iterrows() if len(frame) <= 16 else ()):  # labels only where legible
            ax.annotate(_label(r, num), (r["throughput_rps"], r["latency_p99_ms"]), fontsize=6,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_yscale("log")
    ax.set_xlabel("throughput (req/s)")
    ax.set_ylabel("p99 latency (ms)")
    ax.grid(alpha=0.3, which="both")
    if cat:
        ax.legend(fontsize=7)
    return fig


def sweep_figures(frame: pd.DataFrame) -> list[tuple[str, Any]]:
    """(title, figure) for the plots that fit this grid."""
    num, cat = swept(frame)
    figs = []
    if len(num) >= 2:
        x, y = num[0], num[1]
        rest = cat + num[2:]
        figs.append((f"p99 latency (ms) over {x} × {y}", heatmaps(frame, x, y, rest)))
        if throughput_varies(frame):
            figs.append((f"throughput (req/s) over {x} × {y}",
                         heatmaps(frame, x, y, rest, "throughput_rps")))
    elif len(num) == 1:
        figs.append((f"latency against {num[0]}", lines(frame, num[0], cat)))
    if throughput_varies(frame) or not num:
        figs.append(("p99 latency against throughput", tradeoff(frame, num, cat)))
    return figs
