"""Accuracy against average cost for every policy on one trace and cost model.

Each policy is fitted on the val split and scored on the test split; the budgeted oracle LP
gives the bound no policy with these exits can pass. Costs are per sample, at a stated batch
size, from the latency profile (``policies.costs``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from offramp.analysis.studies.frontier_compare import (
    Served,
    agreement_frontier,
    budget_comparison,
)
from offramp.common.outputs import output_dir
from offramp.core.modes import CostModel
from offramp.policies.configs import PolicyConfigBase
from offramp.policies.costs import average_cost, exit_costs, full_model_cost
from offramp.policies.mixing import best_mix
from offramp.policies.oracle_lp import oracle_frontier
from offramp.policies.parse import parse_policy
from offramp.policies.registry import fit_as_ready
from offramp.profiling.format import LatencyProfile
from offramp.profiling.latency import costs_machine, stage_costs
from offramp.sim.config import ServerConfig
from offramp.traces.format import ExitTrace, has_entropy

BUDGET_FRACTIONS = (0.1, 0.25, 0.4, 0.55, 0.7)
TOLERANCES = (95.0, 97.0, 98.0, 99.0, 99.5, 100.0)


def budgets_for(costs: np.ndarray) -> list[float]:
    """Five budgets spread between the first and the last exit's cost."""
    return [float(costs[0] + f * (costs[-1] - costs[0])) for f in BUDGET_FRACTIONS]


def _cfg(**fields) -> PolicyConfigBase:
    return parse_policy(fields)


def frontier_configs(trace: ExitTrace, budgets: list[float], eenet_fits: int | None = None,
                     eenet_epochs: int | None = None
                     ) -> Iterator[tuple[str, str, PolicyConfigBase]]:
    """(family, setting, config) of every point on the frontier; families that read what the
    trace lacks (the entropy, the softmax: a trace imported from predictions alone) are left
    out."""
    k_exits = trace.n_exits
    entropy, softmax = has_entropy(trace), trace.softmax is not None
    for k in range(k_exits):
        yield "static", f"k={k}", _cfg(name=f"static:{k}")
    yield "oracle", "unbudgeted", _cfg(name="oracle")
    for name in ("maxprob", "entropy") if entropy else ("maxprob",):
        for b in budgets:
            yield f"{name} (exp fractions)", f"budget {b:.4g} ms", _cfg(name=name, budget_ms=b)
        for tau in TOLERANCES:
            yield f"{name} (τ)", f"τ={tau:g}", _cfg(name=name, tolerance_pct=tau)
    for t in range(1, k_exits):
        yield "patience", f"t={t}", _cfg(name="patience", patience=t)
    eenet = {k: v for k, v in (("n_fits", eenet_fits), ("epochs", eenet_epochs)) if v is not None}
    for b in budgets if entropy and softmax else ():
        yield "eenet", f"budget {b:.4g} ms", _cfg(name="eenet", budget_ms=b, **eenet)
    for b in budgets:
        yield "safe-exit", f"budget {b:.4g} ms", _cfg(name="safe-exit", budget_ms=b)
    for tau in (97.0, 99.0, 100.0):
        yield "pame", f"τ={tau:g}", _cfg(name="pame", tolerance_pct=tau)
    full = float(trace.accuracy("val")[-1])
    for drop in (0.02, 0.01, 0.005) if entropy else ():
        yield "gati", f"target {full - drop:.4f}", _cfg(name="gati",
                                                                accuracy_target=round(full - drop, 4))


def compute_frontier(trace: ExitTrace, profile: LatencyProfile, server: ServerConfig,
                     cost_batch: int = 1, eenet_fits: int | None = None,
                     eenet_epochs: int | None = None,
                     progress: Callable[[], None] | None = None, costs: CostModel | None = None,
                     served: Served | None = None
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(points, bound, comparison): one row per fitted policy setting; the oracle LP bound and
    agreement-oracle curves; at each budget the learned policies against the best heuristic
    (``frontier_compare``). Stage costs at calibration ``costs`` (None: the most calibrated
    the profile holds). ``served``: also each budgeted policy's capacity at an SLO when it
    serves a study (``frontier_compare.served_capacity``)."""
    latency = stage_costs(profile, costs, server.engine_sizes)
    costs = exit_costs(latency, cost_batch)
    budgets = budgets_for(costs)
    test, val = trace.indices("test"), trace.indices("val")
    full_acc = float(trace.correct[test, -1].mean())
    test_exits, capacity = {}, {}
    points = [(family, setting, cfg.model_copy(update={"cost_batch": cost_batch})
               if getattr(cfg, "budget_ms", None) is not None or cfg.name in ("eenet", "gati")
               else cfg)
              for family, setting, cfg in frontier_configs(trace, budgets, eenet_fits,
                                                           eenet_epochs)]
    # Each policy as it is ready (EENet's fits train in the pool meanwhile); rows in order.
    at = {}
    for i, policy in fit_as_ready([cfg for _, _, cfg in points], trace, latency, server, "val"):
        family, setting, cfg = points[i]
        row = at[i] = {"family": family, "setting": setting, "policy": cfg.name}
        for split, ids in (("val", val), ("test", test)):
            exits = policy.exit_index(trace, ids)
            row[f"{split}_accuracy"] = float(trace.correct[ids, exits].mean())
            row[f"{split}_cost_ms"] = average_cost(exits, costs)
        row["test_relative_accuracy"] = row["test_accuracy"] / full_acc
        row["test_agreement"] = float(trace.agree[test, policy.exit_index(trace, test)].mean())
        row["budget_ms"] = getattr(cfg, "budget_ms", None)
        if row["budget_ms"] is not None:
            test_exits[(family, row["budget_ms"])] = policy.exit_index(trace, test)
            if served is not None:
                capacity[(family, row["budget_ms"])] = served(policy)
        if progress is not None:
            progress()
    grid = np.linspace(costs[0], costs[-1], 25)
    points = pd.DataFrame([at[i] for i in range(len(points))])
    real = points[points["family"] != "oracle"]
    # Mixing operating points (serving each with some probability) reaches their concave hull.
    mixed = [best_mix(real["test_accuracy"], real["test_cost_ms"], b).accuracy
             if b >= real["test_cost_ms"].min() else np.nan for b in grid]
    bound = pd.DataFrame({"budget_ms": grid, "oracle_bound": oracle_frontier(trace, costs, grid),
                          "agreement_oracle": agreement_frontier(trace, costs, grid),
                          "best_mix": mixed})
    points.attrs.update(costs_ms=costs.tolist(), budgets_ms=budgets, cost_batch=cost_batch,
                        cost_model=latency.costs.value, costs_machine=costs_machine(latency),
                        full_model_cost_ms=full_model_cost(latency, cost_batch),
                        full_model_accuracy=full_acc)
    return points, bound, budget_comparison(trace, points, test_exits, costs, capacity)


def plot_frontier(points: pd.DataFrame, bound: pd.DataFrame, title: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from offramp.analysis.report.plots import save_png


    fig, ax = plt.subplots(figsize=(10.5, 5.5))
    ax.plot(bound["budget_ms"], bound["oracle_bound"], "k-", lw=1.5, label="oracle LP bound")
    ax.plot(bound["budget_ms"], bound["agreement_oracle"], "-", color="0.55", lw=1.5,
            label="agreement oracle (knows which exits agree with the full model)")
    ax.plot(bound["budget_ms"], bound["best_mix"], "k--", lw=1,
            label="best mix of the points below (LP)")
    markers = iter("os^vD<>pPX*h")
    for family, grp in points.groupby("family", sort=False):
        grp = grp.sort_values("test_cost_ms")
        ax.plot(grp["test_cost_ms"], grp["test_accuracy"], marker=next(markers, "o"), ms=5, lw=1,
                ls="none" if family == "static" else "-", label=family)
    ax.set_xlabel(f"average cost per sample (ms, batch {points.attrs.get('cost_batch', 1)})")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    lo = min(points["test_accuracy"].min(), bound["oracle_bound"].min())
    ax.set_ylim(max(lo - 0.02, 0), min(1.0, bound["oracle_bound"].max() + 0.01))
    fig.tight_layout()
    save_png(fig, path)


FRONTIER_OUTPUTS = ("*-frontier.csv", "*-frontier-oracle.csv", "*-frontier-budgets.csv",
                    "*-frontier.png", "report.html")


def frontier_stem(trace: ExitTrace) -> str:
    """TRACE-frontier: named for the trace's file (two traces of one model, e.g. fmnist-resnet
    and fmnist-c, keep their own files in one folder), else its model id."""
    name = Path(trace.source).stem if trace.source else trace.model_id
    return f"{name}-frontier"


def write_frontier(trace: ExitTrace, profile: LatencyProfile, points: pd.DataFrame,
                   bound: pd.DataFrame, comparison: pd.DataFrame, out_dir: Path) -> str:
    """Write the frontier's CSVs (points, oracle bounds, the comparison at each budget) and its
    plot under ``out_dir`` as TRACE-frontier*; return the plot's title."""
    stem = frontier_stem(trace)
    m = profile.meta
    name = stem.removesuffix("-frontier")
    what = trace.model_id if name == trace.model_id else f"{name} ({trace.model_id})"
    machine = points.attrs.get("costs_machine", m.get("device", "?"))
    title = (f"{what}: test accuracy vs cost\n({machine}, {m.get('backend')} "
             f"{m.get('precision')}, {points.attrs.get('cost_model', '?')} costs)")
    # Other models' frontiers in the same folder stay; this model's files are replaced whole.
    with output_dir(out_dir, FRONTIER_OUTPUTS, keep=True) as tmp:
        points.to_csv(tmp / f"{stem}.csv", index=False)
        bound.to_csv(tmp / f"{stem}-oracle.csv", index=False)
        comparison.to_csv(tmp / f"{stem}-budgets.csv", index=False)
        plot_frontier(points, bound, title, tmp / f"{stem}.png")
    return title
