"""One self-contained HTML page for a run folder or a sweep folder.

The page holds the results as tables, the study's config, the plots (PNG data URIs), the
software versions and the commands that reproduce it; it loads nothing from anywhere else.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from offramp.analysis.report.tables import ROWS, costs_line
from offramp.common.errors import InputError

PACKAGES = ("offramp", "numpy", "scipy", "pandas", "simpy", "pydantic", "matplotlib", "torch",
            "dask", "distributed")
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
padding:0 2rem;max-width:70rem;color:#1d232a;line-height:1.4}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #d7dce1;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
th,td{border:1px solid #d7dce1;padding:.25rem .6rem;text-align:right}
th{background:#f2f4f6}td:first-child,th:first-child{text-align:left}
pre{background:#f6f8fa;padding:.8rem;overflow-x:auto;font-size:.85rem}
img{max-width:100%;border:1px solid #eee}.muted{color:#5c6670;font-size:.9rem}
.wide{overflow-x:auto;max-height:40rem;overflow-y:auto}
"""


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def png_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def fig_png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png", bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def html_table(rows: list[list[Any]], head: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return (f"<div class='wide'><table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody>"
            "</table></div>")


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def page(title: str, sections: list[tuple[str, str]], subtitle: str) -> str:
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title><style>{STYLE}</style></head><body><h1>"
            f"{html.escape(title)}</h1><p class='muted'>{html.escape(subtitle)}</p>{body}"
            "</body></html>\n")


def run_report(folder: Path) -> str:
    """The page of a run folder (``offramp simulate -o``)."""
    from offramp.analysis.report.breakdown import summary_row

    doc = json.loads((folder / "summary.json").read_text())
    metrics = doc["metrics"]
    costs = doc.get("stage_costs") or {}
    device = costs.get("machine") or costs.get("device")
    rows = [[f"busy fraction of the replicas ({device} time)" if key == "utilisation" and device
             else label, fmt(metrics[key]["mean"], 5), fmt(metrics[key]["ci95"], 3), unit]
            for key, label, unit, _ in ROWS if key in metrics]
    k = sum(1 for key in metrics if key.startswith("exit_fraction_"))
    rows += [[f"exits at {i}", fmt(metrics[f"exit_fraction_{i}"]["mean"], 4),
              fmt(metrics[f"exit_fraction_{i}"]["ci95"], 3), ""] for i in range(k)]
    config = (folder / "config.resolved.yaml").read_text()
    sections = [("Results (mean over replications, 95% CI)",
                 html_table(rows, ["metric", "mean", "± 95% CI", "unit"])),
                ("Latency and exits", png_tag(folder / "latency.png")),
                ("Where a request's time goes (ms)", _breakdown_section(
                    pd.DataFrame([summary_row(metrics, "this run")]))),
                ("Fitted policy", f"<pre>{html.escape(json.dumps(doc['policy'], indent=1))}</pre>"),
                ("Study config (resolved)", f"<pre>{html.escape(config)}</pre>"),
                ("Reproduce", "<pre>" + html.escape(doc.get("command") or
                                                    f"offramp simulate STUDY.yaml -o {folder}")
                 + "</pre><p class='muted'>the resolved config above is the study; the same "
                 "config and seed give identical results</p>"),
                ("Software", html_table([[k, v] for k, v in versions().items()],
                                    ["package", "version"]))]
    subtitle = (f"{doc['model_id']} · {doc['replications']} replications · "
                f"{doc['engine']} engine · {costs_line(doc.get('stage_costs'))} · {folder}")
    return page(f"offramp run: {folder.name}", sections, subtitle)


def sweep_report(folder: Path) -> str:
    """The page of a sweep folder (``offramp sweep -o``): plots chosen for the grid, the best
    points, every point, the study and grid."""
    import matplotlib

    matplotlib.use("Agg")
    from offramp.analysis.report.sweep_view import METRICS, best_points, grid_fields, sweep_figures

    info = json.loads((folder / "sweep.json").read_text())
    frame = pd.read_parquet(folder / "sweep.parquet")
    fields = grid_fields(frame)
    show = [m for m in METRICS if m in frame.columns]
    rows = [[*(r[f] for f in fields), *(fmt(r[m], 4) for m in show)]
            for _, r in frame.iterrows()]
    best = best_points(frame)
    study = Path(info.get("study_file", info["study"]))
    config = study.read_text() if study.is_file() else "(the study file is not here)"
    if "study_as_run" in info:  # what every point started from: the file with --set applied
        import yaml

        config = (f"# {info['study']}" + (f" with --set {' '.join(info['set'])}"
                                          if info.get("set") else "") + "\n"
                  + yaml.safe_dump(info["study_as_run"], sort_keys=False))
    grid = Path(info.get("grid_file", info["grid"]))
    grid_text = grid.read_text() if grid.is_file() else "(the grid file is not here)"
    sections = [(title, fig_png(fig)) for title, fig in sweep_figures(frame)]
    sections += [("Best points (lowest p99)", html_table(
                     [[fmt(v, 4) if isinstance(v, float) else v for v in r]
                      for r in best.itertuples(index=False)], list(best.columns))),
                 ("Points", html_table(rows, [*fields, *show])),
                 ("Study", f"<pre>{html.escape(config)}</pre>"),
                 ("Grid", f"<pre>{html.escape(grid_text)}</pre>"),
                 ("Reproduce", "<pre>" + html.escape(info.get("command") or (
                     f"offramp sweep {info['study']} --grid {info['grid']} -o {folder}"))
                  + "</pre><p class='muted'>a re-run skips finished points</p>"),
                 ("Software", html_table([[k, v] for k, v in versions().items()],
                                         ["package", "version"]))]
    return page(f"offramp sweep: {folder.name}", sections,
                f"{len(frame)} points · {', '.join(fields)} · {folder}")


def _breakdown_section(frame: pd.DataFrame, png: Path | None = None) -> str:
    """The stacked bars (``png``, where drawn) and their table (ms per request), where the
    rows carry a breakdown."""
    from offramp.analysis.report.breakdown import breakdown_html_rows, has_breakdown

    if not has_breakdown(frame):
        return "<p class='muted'>no breakdown recorded</p>"
    rows, head = breakdown_html_rows(frame)
    return ((png_tag(png) if png is not None and png.exists() else "") + html_table(rows, head)
            + "<p class='muted'>queueing: arrival to dispatch; in service: dispatch to the "
            "request's exit; the means of queueing and of each stage kind add up to the mean "
            "latency</p>")


def demo_report(folder: Path, results: dict[str, dict[str, Any]], command: str) -> str:
    """The page of an ``offramp demo`` folder: per model the policy table, the capacities and
    the load sweep."""
    sections = []
    for name, r in results.items():
        pol = r["policies"]
        rows = [[x["policy"], x["policy_fit"], x["exit_mode"], fmt(x["throughput_rps"], 5),
                 f"{x['latency_p50_ms']:.2f} ± {x['latency_p50_ms_ci95']:.2f}",
                 f"{x['latency_p99_ms']:.2f} ± {x['latency_p99_ms_ci95']:.2f}",
                 f"{x['accuracy']:.4f}", f"{x['slo_attainment']:.3f}"] for _, x in pol.iterrows()]
        caps = [[c["policy"], c["exit_mode"], f"{c['capacity_rps']:.0f} ± "
                 f"{c['plus_minus_rps']:.0f}", c["probes"]] for _, c in r["capacity"].iterrows()]
        sections += [
            (f"{name} on {r['profile']}: policies at 60% of the no-exit capacity "
             f"({0.6 * r['capacity_no_exit_rps']:.0f} req/s), SLO {r['slo_ms']} ms",
             f"<p class='muted'>{html.escape(costs_line(r.get('stage_costs')))}</p>"
             + html_table(rows, ["policy", "fit", "exit mode", "throughput req/s", "p50 ms",
                             "p99 ms", "accuracy", "SLO met"])),
            (f"{name}: capacity with 99% of requests within {r['slo_ms']} ms",
             html_table(caps, ["policy", "exit mode", "capacity req/s", "probes"])),
            (f"{name}: where a request's time goes", _breakdown_section(
                pol, folder / f"{name}-breakdown.png")),
            (f"{name}: load sweep", png_tag(folder / f"{name}-load-sweep.png"))]
    sections += [("Reproduce", f"<pre>{html.escape(command)}</pre>"),
                 ("Software", html_table([[k, v] for k, v in versions().items()],
                                     ["package", "version"]))]
    return page("offramp demo", sections, "every shipped model with a shipped profile; "
                 "policies fitted on val, judged on test; 95% CIs over replications")


def report(folder: str | Path) -> str:
    """The page for whatever kind of folder ``folder`` is."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, None, "is not a folder", "pass a run, sweep, capacity, "
                         "optimize, frontier or concurrency folder")
    if (folder / "summary.json").exists():
        return run_report(folder)
    if (folder / "sweep.parquet").exists() and (folder / "sweep.json").exists():
        return sweep_report(folder)
    if (folder / "optimize.json").exists():
        from offramp.analysis.report.search_pages import optimize_report

        return optimize_report(folder)
    if (folder / "capacity.json").exists():
        from offramp.analysis.report.search_pages import capacity_report

        return capacity_report(folder)
    if any(folder.glob("*-frontier.csv")):
        from offramp.analysis.report.frontier_page import frontier_report

        return frontier_report(folder)
    if (folder / "concurrency.json").exists():
        from offramp.analysis.report.concurrency_page import concurrency_report

        return concurrency_report(folder)
    raise InputError(folder, None, "is not a run (summary.json), sweep (sweep.parquet), optimize "
                     "(optimize.json), capacity (capacity.json), concurrency "
                     "(concurrency.json) or frontier (MODEL-frontier.csv) folder", "pass what "
                     "offramp simulate, sweep, optimize, capacity, concurrency or frontier "
                     "wrote with -o")
