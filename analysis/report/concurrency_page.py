"""The latency–throughput curve against concurrency (perf_analyzer's view of a server): its
plot and its page."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from offramp.analysis.report.html import fmt, html_table, page, png_tag, versions

COLUMNS = [("concurrency", "concurrency", 0), ("throughput_rps", "throughput req/s", 4),
           ("latency_p50_ms", "p50 ms", 4), ("latency_p90_ms", "p90 ms", 4),
           ("latency_p95_ms", "p95 ms", 4), ("latency_p99_ms", "p99 ms", 4),
           ("batch_size_stage_0", "first-stage batch", 3), ("utilisation", "busy", 3),
           ("accuracy", "accuracy", 4)]


def plot_concurrency(frame: pd.DataFrame, path: Path, slo_ms: float | None = None) -> None:
    """p50 and p99 latency against throughput, each point labelled with its concurrency; and
    throughput against concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from offramp.analysis.report.plots import save_png

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for metric, style in (("latency_p50_ms", "o-"), ("latency_p99_ms", "s--")):
        ax1.plot(frame["throughput_rps"], frame[metric], style, label=metric.split("_")[1])
    for _, r in frame.iterrows():
        ax1.annotate(f"{int(r['concurrency'])}", (r["throughput_rps"], r["latency_p99_ms"]),
                     textcoords="offset points", xytext=(3, 4), fontsize=7)
    if slo_ms is not None:
        ax1.axhline(slo_ms, color="k", ls=":", lw=1, label=f"SLO {slo_ms:g} ms")
    ax1.set_xlabel("throughput (req/s)")
    ax1.set_ylabel("latency (ms)")
    ax1.set_title("latency against throughput (labels: concurrency)")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.plot(frame["concurrency"], frame["throughput_rps"], "o-")
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(list(frame["concurrency"]), [str(int(n)) for n in frame["concurrency"]])
    ax2.set_xlabel("concurrency (clients)")
    ax2.set_ylabel("throughput (req/s)")
    ax2.set_title("throughput against concurrency")
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_png(fig, path)


def concurrency_report(folder: Path, doc: dict[str, Any] | None = None) -> str:
    """The page of a concurrency folder (``offramp concurrency -o``)."""
    doc = doc or json.loads((folder / "concurrency.json").read_text())
    frame = pd.DataFrame(doc["rows"])
    rows = [[fmt(r[c], d) if d else int(r[c]) for c, _, d in COLUMNS] for _, r in frame.iterrows()]
    sections = [("Latency and throughput", png_tag(folder / "concurrency.png")
                 if (folder / "concurrency.png").exists() else ""),
                ("By concurrency", html_table(rows, [h for _, h, _ in COLUMNS])),
                ("Reproduce", f"<pre>{html.escape(doc['command'])}</pre>"),
                ("Software", html_table([[k, v] for k, v in versions().items()],
                                        ["package", "version"]))]
    return page(f"offramp concurrency: {folder.name}", sections,
                f"{doc['study']} · closed loop, think {doc['think_ms']:g} ms · {folder}")
