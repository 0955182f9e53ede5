"""The pages of the two searches: ``offramp capacity -o`` and ``offramp optimize -o``."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from offramp.analysis.report.html import fmt, html_table, page, png_tag, versions


def optimize_report(folder: Path, doc: dict[str, Any] | None = None) -> str:
    """The page of an optimize folder (``offramp optimize -o``)."""
    doc = doc or json.loads((folder / "optimize.json").read_text())
    priced = any(r.get("cost_per_million") is not None for r in doc["table"])
    head = ["", "configuration", doc["objective_label"], "± 95% CI", "× no exits",
            "test rel. accuracy [95% CI]", "compute ms/sample (val)", "p99 ms", "replicas",
            *(["cost per million requests"] if priced else [])]
    rows = []
    for r in doc["table"]:
        ci = r["test_relative_accuracy_ci95"]
        acc = fmt(r["test_relative_accuracy"], 4) + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
        rows.append([r["label"], r["config"], fmt(r["value"], 5), fmt(r["value_ci95"], 3),
                     fmt(r["vs_no_exits"], 3), acc, fmt(r["cost_ms"], 4), fmt(r["p99_ms"], 4),
                     r["replicas"], *([fmt(r.get("cost_per_million"), 4)] if priced else [])])
    spent = doc["simulated_requests"]
    sections = [
        ("Result", "<p>" + html.escape(doc["goal_line"] if "goal_line" in doc else "")
         + "</p><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in doc["why"]) + "</ul>"
         + html_table(rows, head)),
        ("Accuracy against the objective", png_tag(folder / "front.png")
         if (folder / "front.png").exists() else "<p class='muted'>no plot</p>"),
        ("The winner as a study (best.yaml)",
         f"<pre>{html.escape((folder / 'best.yaml').read_text())}</pre>"
         if (folder / "best.yaml").exists() else ""),
        ("Search space", f"<pre>{html.escape(json.dumps(doc['space'], indent=1))}</pre>"),
        ("Spent", html_table([[k, f"{v:,}", fmt(doc["seconds"].get(k), 3)]
                              for k, v in spent.items()],
                             ["phase", "simulated requests", "seconds"])),
        ("Reproduce", f"<pre>{html.escape(doc['command'])}</pre>"),
        ("Software", html_table([[k, v] for k, v in versions().items()],
                                ["package", "version"]))]
    subtitle = f"{doc['study']} · {doc['trials']} candidates screened · {folder}"
    return page(f"offramp optimize: {folder.name}", sections, subtitle)


def capacity_report(folder: Path, doc: dict[str, Any] | None = None) -> str:
    """The page of a capacity folder (``offramp capacity -o``)."""
    doc = doc or json.loads((folder / "capacity.json").read_text())
    rows = []
    for label, v in doc["variants"].items():
        there = v["at_capacity"]
        rows.append([label, fmt(v["capacity_rps"], 5), fmt(v["plus_minus_rps"], 3),
                     fmt(there["latency_p50_ms"], 4), fmt(there["latency_p99_ms"], 4),
                     fmt(there["accuracy"], 4),
                     " ".join(f"{f:.3f}" for f in there["exit_fractions"]),
                     fmt(there["batch_size_stage_0"], 3), fmt(there["utilisation"], 3),
                     len(v["probes"]), *([fmt(there["cost_per_million"], 4)]
                                         if there.get("cost_per_million") is not None else [])])
    slo = next(iter(doc["variants"].values()))["slo"]
    head = ["variant", "capacity req/s", "± (half bracket)", "p50 ms there", "p99 ms there",
            "accuracy", "exit fractions", "first-stage batch", "busy", "probes"]
    if any(v["at_capacity"].get("cost_per_million") is not None
           for v in doc["variants"].values()):
        head.append("cost per million requests")
    probes = [[label, fmt(p["rate_rps"], 5), fmt(p["value"], 4), fmt(p["ci95"], 3),
               "holds" if p["holds"] else "fails", p["replications"]]
              for label, v in doc["variants"].items() for p in v["probes"]]
    sections = [("Capacity within the SLO", html_table(rows, head) + (
                    "<p class='muted'>p50 / p99 there: one run of the study's replications at "
                    "the capacity; whether the SLO holds is judged on each probe's pooled "
                    "replications (Probes), so a p99 there can sit a little over the bound</p>")),
                ("Capacity by variant", png_tag(folder / "capacity.png")
                 if (folder / "capacity.png").exists() else ""),
                ("Probes", html_table(probes, ["variant", "rate req/s", "statistic",
                                               "± 95% CI", "", "replications"])),
                ("Fitted policies", "<pre>" + html.escape(json.dumps(
                    {k: v["at_capacity"]["policy"] for k, v in doc["variants"].items()},
                    indent=1)) + "</pre>"),
                ("Reproduce", f"<pre>{html.escape(doc['command'])}</pre>"),
                ("Software", html_table([[k, v] for k, v in versions().items()],
                                        ["package", "version"]))]
    what = (f"p{100 * slo['attainment']:g} <= {slo['latency_ms']:g} ms"
            if slo.get("attainment") else f"mean <= {slo['latency_ms']:g} ms")
    return page(f"offramp capacity: {folder.name}", sections, f"{doc['study']} · {what} · {folder}")
