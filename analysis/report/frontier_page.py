"""The page of a frontier folder (``offramp frontier -o``): per model, the accuracy–cost plot,
the points on val's accuracy–cost front (scored on test), the oracle bounds and, at each budget,
the learned policies against the best heuristic."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from offramp.analysis.report.html import fmt, html_table, page, png_tag, versions
from offramp.analysis.studies.frontier_compare import comparison_rows


def _table(frame: pd.DataFrame, digits: int = 4) -> str:
    def cell(v):
        if isinstance(v, float):
            return "—" if v != v else fmt(v, digits)  # NaN: nothing there (e.g. no mix yet)
        return v

    return html_table([[cell(v) for v in r] for r in frame.itertuples(index=False)],
                      list(frame.columns))


def frontier_report(folder: Path) -> str:
    """Every model's frontier in ``folder`` on one page."""
    sections = []
    models = sorted(p.name.removesuffix("-frontier.csv") for p in folder.glob("*-frontier.csv"))
    for model in models:
        points = pd.read_csv(folder / f"{model}-frontier.csv")
        real = points[points["family"] != "oracle"]
        best = (real.sort_values(["val_cost_ms", "val_accuracy"], ascending=[True, False])
                .assign(best=lambda f: f["val_accuracy"].cummax())
                .query("val_accuracy == best").drop_duplicates("val_accuracy"))
        cols = ["policy", "setting", "val_cost_ms", "val_accuracy", "test_cost_ms",
                "test_accuracy", "test_relative_accuracy"]
        sections.append((f"{model}: test accuracy against cost",
                         png_tag(folder / f"{model}-frontier.png")))
        sections.append((f"{model}: the points no cheaper point beats on val (chosen on val, "
                         "scored on test)", _table(best[cols])))
        path = folder / f"{model}-frontier-budgets.csv"
        if path.exists():
            headers, rows = comparison_rows(pd.read_csv(path))
            sections.append((f"{model}: at each budget, on test: the best heuristic (chosen on "
                             "val), EENet and safe-exit, each with its difference from max-prob "
                             "in points and the paired 95% CI; the agreement oracle and the "
                             "oracle LP bound (every column: the CSV beside this page)",
                             html_table(rows, headers)))
        path = folder / f"{model}-frontier-oracle.csv"
        if path.exists():
            sections.append((f"{model}: the oracle bound (what any policy could reach)",
                             _table(pd.read_csv(path))))
    sections.append(("Software", html_table([[k, v] for k, v in versions().items()],
                                            ["package", "version"])))
    return page(f"offramp frontier: {folder.name}", sections,
                f"{', '.join(models)} · {folder}")
