"""Plots of a run: latency distribution and where requests exit."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from offramp.core.modes import StageKind

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from offramp.common.atomic import atomic_path  # noqa: E402
from offramp.profiling.format import LatencyProfile  # noqa: E402
from offramp.traces.format import ExitTrace  # noqa: E402


def save_png(fig, path: str | Path) -> Path:
    """Write a figure as PNG atomically (temp file, then rename) and close it."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_run(frame: pd.DataFrame, n_exits: int, slo_ms: float | None, path: Path) -> None:
    """After warm-up: the latency tail (the fraction of requests slower than x, log scale, so
    p90/p99/p99.9 are visible), where requests exit, where their time goes (queueing and
    each stage kind, by exit) and how full the batches were, side by side, as a PNG."""
    kept = frame[~frame["warmup"]]
    fig, (ax1, ax2, ax3, ax4) = plt.subplots(1, 4, figsize=(20, 4))
    _batch_sizes(ax4, kept)
    floor = 1.0
    for rep, grp in kept.groupby("replication"):
        lat = np.sort(grp["latency_ms"].to_numpy())
        slower = 1.0 - np.arange(lat.size) / lat.size  # P(latency >= x), at least 1/n
        floor = min(floor, 1.0 / max(lat.size, 1))
        ax1.step(lat, slower, where="post", lw=1, label=f"replication {rep}")
    for q, label in ((0.1, "p90"), (0.01, "p99"), (0.001, "p99.9")):
        if q >= floor:
            ax1.axhline(q, color="0.6", lw=0.8, ls=":")
            ax1.text(ax1.get_xlim()[0], q, f" {label}", va="bottom", fontsize=7, color="0.4")
    if slo_ms is not None:
        ax1.axvline(slo_ms, color="k", ls="--", lw=1, label=f"SLO {slo_ms:g} ms")
    ax1.set_yscale("log")
    ax1.set_xlabel("latency (ms)")
    ax1.set_ylabel("fraction of requests slower")
    ax1.set_title("Latency tail")
    ax1.grid(alpha=0.3, which="both")
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
    if "queue_ms" in kept:
        from offramp.analysis.report.breakdown import COLORS, LABELS

        cols = [("queueing", "queue_ms", "queueing")]
        cols += [(k, f"{k}_ms", LABELS[k]) for k in StageKind
                 if f"{k}_ms" in kept and kept[f"{k}_ms"].gt(0).any()]
        if len(cols) == 1:  # no stage breakdown recorded: queueing vs in service
            cols.append((StageKind.SEGMENT, "service_ms", "in service"))
        means = kept.groupby("exit_index")[[c for _, c, _ in cols]].mean().reindex(
            range(n_exits)).fillna(0.0)
        bottom = np.zeros(n_exits)
        for part, col, label in cols:
            ax3.bar(range(n_exits), means[col], bottom=bottom, label=label,
                    color=COLORS[part])
            bottom += means[col].to_numpy()
        ax3.set_xticks(range(n_exits))
        ax3.legend(fontsize=7)
    ax3.set_xlabel("exit")
    ax3.set_ylabel("mean ms per request")
    ax3.set_title("Where the time goes")
    fig.tight_layout()
    save_png(fig, path)


def _batch_sizes(ax, kept: pd.DataFrame) -> None:
    """The first stage's batch sizes after warm-up: the share of batches of each size."""
    sizes = kept.groupby(["replication", "batch_id"]).size().to_numpy()
    if sizes.size:
        values, counts = np.unique(sizes, return_counts=True)
        ax.bar(values, counts / sizes.size, width=0.8, color="tab:green")
        for q, style in ((50, "--"), (90, ":")):
            v = float(np.percentile(sizes, q))
            ax.axvline(v, color="k", ls=style, lw=1, label=f"p{q} {v:g}")
        ax.legend(fontsize=7)
    ax.set_xlabel("requests in the batch (first stage)")
    ax.set_ylabel("fraction of batches")
    ax.set_title("How full the batches were")


def plot_profile(profile: LatencyProfile, path: Path, scale: str = "log") -> Path:
    """Latency vs batch size: one line (p50) and band (p50..p99) per stage."""
    from offramp.profiling.summary import stage_summary

    m = profile.meta
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    panels = {kind: axes[0] if kind.is_model else axes[1] for kind in StageKind}
    styles = {StageKind.SEGMENT: "-", StageKind.HEAD: "--", StageKind.COMPACT: "-",
              StageKind.CHECK: "--", StageKind.HANDOFF: "-.", StageKind.OVERHEAD: ":"}
    colors = plt.get_cmap("tab10")
    for s in stage_summary(profile):
        rows = profile.stage(s["kind"], s["k"])
        b = [r["batch"] for r in rows]
        p50 = [r["p50_ms"] for r in rows]
        p99 = [r["p99_ms"] for r in rows]
        kind = StageKind(s["kind"])
        ax = panels[kind]
        overhead = kind is StageKind.OVERHEAD
        color = "black" if overhead else colors(s["k"] % 10)
        label = str(kind) if overhead else f"{kind} {s['k']}"
        ax.plot(b, p50, styles[kind], color=color, label=label, lw=1.4)
        ax.fill_between(b, p50, p99, color=color, alpha=0.15, lw=0)
    for ax, title in zip(axes, ("segments and heads",
                                "the serving loop's own stages: check, compact, handoff, overhead"),
                         strict=True):
        ax.set_xscale(scale)
        ax.set_yscale(scale)
        ax.set_xlabel("batch size")
        ax.set_ylabel("latency, ms (line p50, band to p99)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{m['model_id']}: {m['backend']} {m['precision']} on {m['device']}"
                 f"{' (synthetic)' if m['synthetic'] else ''}")
    fig.tight_layout()
    return save_png(fig, path)


def plot_confidence(trace: ExitTrace, path: str | Path, split: str = "test") -> Path:
    """Histogram of the max softmax probability per exit, correct vs wrong samples (PNG)."""
    idx = trace.indices(split)
    k = trace.n_exits
    fig, axes = plt.subplots(1, k, figsize=(3.0 * k, 2.8), sharey=True, squeeze=False)
    bins = np.linspace(1.0 / trace.n_classes, 1.0, 26)
    for j, ax in enumerate(axes[0]):
        conf, ok = trace.maxprob[idx, j], trace.correct[idx, j]
        ax.hist([conf[ok], conf[~ok]], bins=bins, stacked=True, label=["correct", "wrong"],
                color=["tab:blue", "tab:red"])
        ax.set_title(f"{trace.meta['exit_names'][j]} (acc {ok.mean():.3f})", fontsize=9)
        ax.set_xlabel("max softmax")
    axes[0][0].set_ylabel(f"{split} samples")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"{trace.model_id} on {trace.meta['dataset']}: confidence per exit", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def plot_sweep(frame, model: str, slo_ms: float, path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for (pol, fit, mode), grp in frame.groupby(["policy", "policy_fit", "exit_mode"], sort=False):
        label = f"{pol} {fit} / {mode} (accuracy {grp['accuracy'].mean():.3f})".replace("  ", " ")
        ax1.plot(grp["throughput_rps"], grp["latency_p99_ms"], marker="o", ms=4, label=label)
        ax2.plot(grp["rate_rps"], grp["latency_p50_ms"], marker="o", ms=4, label=label)
    for ax in (ax1, ax2):
        ax.axhline(slo_ms, color="k", ls="--", lw=1, label=f"SLO {slo_ms:g} ms")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    ax1.set_xlabel("achieved throughput (req/s)")
    ax1.set_ylabel("p99 latency (ms)")
    ax1.set_title(f"{model}: p99 latency vs throughput")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("offered load (req/s)")
    ax2.set_ylabel("p50 latency (ms)")
    ax2.set_title("p50 latency vs offered load")
    fig.tight_layout()
    save_png(fig, path)


def plot_validation(real: pd.DataFrame, sim: pd.DataFrame, stages: pd.DataFrame,
                    path: Path) -> Path:
    """Left: per (mode, load), the real runs' latency CDFs as a band (min..max over repeats)
    with the simulated CDF over it. Right: each stage's real time (median per stage and batch
    size) against the profile's p50."""
    keys = list(dict.fromkeys(real["key"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    q = np.linspace(0.0, 0.999, 400)
    colors = plt.get_cmap("tab10")
    for i, key in enumerate(keys):
        r = real[(real["key"] == key) & ~real["warmup"]]
        curves = np.array([np.quantile(g["latency_ms"], q) for _, g in r.groupby("repeat")])
        ax1.fill_betweenx(q, curves.min(axis=0), curves.max(axis=0), color=colors(i % 10),
                          alpha=0.3, lw=0, label=f"{key} real ({len(curves)} runs)")
        s = sim[(sim["key"] == key) & ~sim["warmup"]]
        ax1.plot(np.quantile(s["latency_ms"], q), q, color=colors(i % 10), lw=1.2,
                 label=f"{key} simulated")
    ax1.set_xscale("log")
    ax1.set_xlabel("latency, ms")
    ax1.set_ylabel("fraction of requests")
    ax1.set_title("latency CDF: real band vs simulation")
    ax1.legend(fontsize=6, ncol=2)
    ax1.grid(alpha=0.3, which="both")
    med = stages.groupby(["kind", "k", "batch"], as_index=False).agg(
        real_ms=("real_ms", "median"), profile_p50_ms=("profile_p50_ms", "first"))
    for j, (kind, g) in enumerate(med.groupby("kind")):
        ax2.scatter(g["profile_p50_ms"], g["real_ms"], s=10, color=colors(j % 10), label=kind)
    lim = [max(1e-3, float(np.nanmin(med[["real_ms", "profile_p50_ms"]].to_numpy()))),
           float(np.nanmax(med[["real_ms", "profile_p50_ms"]].to_numpy()))]
    ax2.plot(lim, lim, "k--", lw=1, label="real = predicted")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("profile p50, ms (predicted)")
    ax2.set_ylabel("real, ms (median over the runs)")
    ax2.set_title("per-stage service time, real vs predicted")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_png(fig, path)


def plot_front(trials: list[dict], marks: dict[str, dict], value_label: str, path: Path) -> None:
    """Every screened candidate's test relative accuracy against its objective value (colour:
    policy; the non-dominated ones joined), and the finalized winner and baselines with their
    95% CIs (``marks``: label -> {x, x_lo, x_hi, y, y_ci})."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    by_policy: dict[str, list[tuple[float, float]]] = {}
    for t in trials:
        if t["feasible"] and t["x"] is not None:
            by_policy.setdefault(t["policy"], []).append((t["x"], t["y"]))
    for name, pts in sorted(by_policy.items()):
        xs, ys = zip(*pts, strict=True)
        ax.scatter(xs, ys, s=14, alpha=0.45, label=f"{name} (screened)")
    front = sorted((t["x"], t["y"]) for t in trials if t.get("front"))
    if front:
        ax.step(*zip(*front, strict=True), where="pre", color="0.4", lw=1, label="front")
    for i, (label, m) in enumerate(marks.items()):
        ax.errorbar([m["x"]], [m["y"]], yerr=[[m.get("y_ci") or 0], [m.get("y_ci") or 0]],
                    xerr=[[m["x"] - m["x_lo"]], [m["x_hi"] - m["x"]]], fmt="*^so<>dv"[i % 9],
                    ms=11 if i == 0 else 8, capsize=3, label=label, zorder=5)
    ax.set_xlabel("relative accuracy on test (chosen on val)")
    ax.set_ylabel(value_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_png(fig, path)


def plot_capacity(doc: dict, path: Path) -> None:
    """Each variant's capacity (the final bracket as the error bar), labelled with its accuracy
    and p99 at the capacity."""
    import re
    import textwrap

    labels = list(doc)
    caps = [doc[k]["capacity_rps"] for k in labels]
    err = [doc[k]["plus_minus_rps"] for k in labels]
    # Whole labels, wrapped (variants may differ only at their end, e.g. a pipeline's groups).
    shown = [textwrap.fill(re.sub(r",(?=\S)", ", ", k), 46) for k in labels]
    lines = max(t.count("\n") + 1 for t in shown)
    fig, ax = plt.subplots(figsize=(8.5, 0.6 + (0.3 + 0.15 * lines) * len(labels)))
    ax.barh(range(len(labels)), caps, xerr=err, color="#4c78a8", capsize=3)
    for i, k in enumerate(labels):
        there = doc[k]["at_capacity"]
        ax.text(caps[i], i, f"  acc {there['accuracy']:.4f}, p99 {there['latency_p99_ms']:.1f} ms",
                va="center", fontsize=8)
    ax.set_yticks(range(len(labels)), shown, fontsize=7 if lines > 2 else 8)
    ax.invert_yaxis()
    ax.set_xlabel("capacity within the SLO (req/s)")
    ax.set_xlim(0, max(caps) * 1.45)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)
