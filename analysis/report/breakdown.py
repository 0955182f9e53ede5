"""Where the time goes: a request's latency as queueing plus its time in each stage kind.

Rows are study results (``offramp demo``'s policy table, one ``simulate`` summary) carrying the
breakdown metrics of :data:`offramp.sim.metrics.BREAKDOWN` as ``<metric>`` (means over
replications). The same rows make the CLI table, the HTML table and the stacked bar plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from offramp.core.modes import StageKind
from offramp.sim.metrics import BETWEEN, stage_metric

LABELS = {StageKind.SEGMENT: "segments", StageKind.HEAD: "exit heads",
          StageKind.CHECK: "exit decisions", StageKind.COMPACT: "compaction",
          StageKind.HANDOFF: "handoff", StageKind.OVERHEAD: "dispatch + wake-up"}
LABELS[BETWEEN] = "between stages"  # rebatch: survivors waiting for the next stage's batch
COLORS = {"queueing": "tab:orange", StageKind.SEGMENT: "tab:green", StageKind.HEAD: "tab:blue",
          StageKind.CHECK: "tab:purple", StageKind.COMPACT: "tab:red",
          StageKind.HANDOFF: "tab:olive", StageKind.OVERHEAD: "tab:gray", BETWEEN: "tab:brown"}


def _metric(part: StageKind | str) -> str:
    return stage_metric(part) if isinstance(part, StageKind) else f"{part}_mean_ms"


def summary_row(summary: dict[str, Any], label: str) -> dict[str, Any]:
    """One row from a run's summary (metric -> {mean, ci95})."""
    return {"label": label, **{k: v["mean"] for k, v in summary.items()}}


def kinds_present(frame: pd.DataFrame) -> list[StageKind | str]:
    """The stage kinds that took any time in any row (the others are left out of tables), and
    the time between stages where a row rebatches."""
    return [k for k in (BETWEEN, *StageKind) if _metric(k) in frame
            and (frame[_metric(k)].fillna(0) > 0).any()]


def has_breakdown(frame: pd.DataFrame) -> bool:
    return "wait_mean_ms" in frame and bool(kinds_present(frame))


def _ms(v: float) -> str:
    return f"{v:.3f}" if abs(v) >= 0.01 else f"{v:.2g}"


def _cells(row: Any, kinds: list[StageKind | str]) -> list[str]:
    cols = ["wait_p50_ms", "wait_p99_ms", "in_service_p50_ms", "in_service_p99_ms", "wait_mean_ms"]
    # A row that does not rebatch has no time between stages (NaN in a mixed table): 0.
    return [_ms(row[c]) for c in cols] + [_ms(0.0 if pd.isna(row[_metric(k)])
                                              else row[_metric(k)]) for k in kinds]


def header(kinds: list[StageKind | str]) -> list[str]:
    return (["queueing p50", "queueing p99", "in service p50", "in service p99",
             "queueing mean"] + [f"{LABELS[k]} mean" for k in kinds])


def breakdown_table(frame: pd.DataFrame, title: str) -> Table:
    """ms per request: queueing and in-service p50/p99, then the means that add up to the mean
    latency (queueing + each stage kind)."""
    kinds = kinds_present(frame)
    table = Table(title=title)
    table.add_column("variant", no_wrap=True)
    for col in header(kinds):
        table.add_column(col, justify="right")
    for _, row in frame.iterrows():
        table.add_row(str(row["label"]), *_cells(row, kinds))
    return table


def breakdown_html_rows(frame: pd.DataFrame) -> tuple[list[list[str]], list[str]]:
    """(rows, header) of the same table for a page."""
    kinds = kinds_present(frame)
    return ([[str(r["label"]), *_cells(r, kinds)] for _, r in frame.iterrows()],
            ["variant", *header(kinds)])


def plot_breakdown(frame: pd.DataFrame, title: str, path: Path) -> Path:
    """A stacked bar per row: mean queueing, then each stage kind's mean time (they add up to
    the mean latency, written at the end of each bar)."""
    import matplotlib.pyplot as plt

    from offramp.analysis.report.plots import save_png

    kinds = kinds_present(frame)
    parts = [("queueing", "wait_mean_ms")] + [(k, _metric(k)) for k in kinds]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(frame) + 2.0))
    y = range(len(frame))
    left = pd.Series(0.0, index=frame.index)
    for part, col in parts:
        values = frame[col].fillna(0.0)
        ax.barh(y, values, left=left, color=COLORS[part],
                label=LABELS.get(part, part))
        left = left + values
    for i, total in enumerate(left):
        ax.text(total, i, f" {total:.2f} ms", va="center", fontsize=8)
    ax.set_yticks(list(y), [str(v) for v in frame["label"]], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean ms per request")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=min(len(parts), 7), loc="upper center",
              bbox_to_anchor=(0.5, -0.12 - 0.4 / max(len(frame), 1)), frameon=False)
    ax.margins(x=0.15)
    fig.tight_layout()
    return save_png(fig, path)
