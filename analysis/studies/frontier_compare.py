"""The frontier's fair comparison at each budget: learned policies against the best heuristic.

At each of the frontier's budgets every budgeted family is fitted to that budget on val; the
**best heuristic** (max-prob or entropy with EENet's geometric exit fractions) is the one more
accurate **on val**, and only then scored on test. Every test accuracy comes with a paired 95%
confidence interval of its difference from max-prob at the same budget (a bootstrap over test
samples: the same resampled samples for both policies). Beside them the two ceilings: the
oracle LP bound (knows which exits are right) and the agreement oracle (knows only which exits
agree with the full model: what a perfect agreement scorer such as safe-exit's could reach).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offramp.policies.oracle_lp import oracle_lp, pattern_lp
from offramp.traces.format import ExitTrace

HEURISTICS = ("maxprob (exp fractions)", "entropy (exp fractions)")
Served = Callable[[Any], tuple[float, float]]  # fitted policy -> (capacity req/s, ±)
LEARNED = ("eenet", "safe-exit")
BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0


def paired_ci(a: np.ndarray, b: np.ndarray, n_boot: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED
              ) -> tuple[float, float, float]:
    """Mean of ``a − b`` (per-sample correctness, paired) and its 95% bootstrap interval."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, (n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return float(d.mean()), float(lo), float(hi)


def agreement_accuracy(trace: ExitTrace, ids: np.ndarray, costs: Sequence[float],
                       budget_ms: float) -> float:
    """The agreement oracle's accuracy at a budget: the best any policy reaches that knows, per
    sample, which exits agree with the full model and nothing else. Samples with the same
    agreement pattern are alike to it, so it is the LP over patterns whose payoff is each
    pattern's mean correctness at each exit (never below serving every sample at exit 0)."""
    agree = trace.agree[ids]
    correct = trace.correct[ids].astype(float)
    patterns, inverse, counts = np.unique(agree, axis=0, return_inverse=True, return_counts=True)
    inverse = np.asarray(inverse).reshape(-1)
    payoff = np.zeros(patterns.shape)
    np.add.at(payoff, inverse, correct)
    payoff /= counts[:, None]
    frac = pattern_lp(payoff, counts, costs, budget_ms)
    if np.isnan(frac).any():
        return float("nan")
    return float((counts / counts.sum()) @ (frac * payoff).sum(axis=1))


def agreement_frontier(trace: ExitTrace, costs: Sequence[float], budgets: Sequence[float],
                       split: str = "test") -> np.ndarray:
    """The agreement oracle's accuracy at each budget."""
    ids = trace.indices(split)
    return np.array([agreement_accuracy(trace, ids, costs, b) for b in budgets])


def served_capacity(cfg: Any, base: Path | None, slo_p99_ms: float) -> Served:
    """A fitted policy's capacity at the p99 SLO when it serves the study ``cfg`` (its
    workload, batching, exit mode and run; the policy replaces the study's): ``offramp
    capacity``'s search, common random numbers across policies."""
    from offramp.analysis.studies.capacity import capacity_explained

    def measure(policy: Any) -> tuple[float, float]:
        res, _ = capacity_explained(cfg, base, slo_p99_ms, policy=policy)
        return res.capacity_rps, res.plus_minus_rps

    return measure


def budget_comparison(trace: ExitTrace, points: pd.DataFrame,
                      test_exits: dict[tuple[str, float], np.ndarray],
                      costs: Sequence[float],
                      capacity: dict[tuple[str, float], tuple[float, float]] | None = None
                      ) -> pd.DataFrame:
    """One row per budget: the best heuristic chosen on val, EENet and safe-exit, each with its
    test accuracy and paired 95% CI against max-prob; the oracle LP bound and the agreement
    oracle. ``test_exits[(family, budget)]``: the policy's exit per test sample;
    ``capacity[(family, budget)]``: its capacity at the SLO when served (``--served``)."""
    test = trace.indices("test")
    correct = trace.correct[test]
    rows = np.arange(test.size)
    budgeted = points[points["budget_ms"].notna()]
    out = []
    for budget, grp in budgeted.groupby("budget_ms"):
        if ("maxprob (exp fractions)", budget) not in test_exits:
            continue
        base = correct[rows, test_exits[("maxprob (exp fractions)", budget)]]
        heur = grp[grp["family"].isin(HEURISTICS)]
        best = heur.loc[heur["val_accuracy"].idxmax()]
        row = {"budget_ms": float(budget), "best_heuristic": best["family"].split()[0],
               "oracle_bound": oracle_lp(correct, costs, budget).accuracy,
               "agreement_oracle": agreement_accuracy(trace, test, costs, budget)}
        for label, family in (("heuristic", best["family"]), *((f, f) for f in LEARNED)):
            if (family, budget) not in test_exits:
                continue
            mine = correct[rows, test_exits[(family, budget)]]
            diff, lo, hi = paired_ci(mine, base)
            point = grp[grp["family"] == family].iloc[0]
            row.update({f"{label}_test_accuracy": float(mine.mean()),
                        f"{label}_test_cost_ms": float(point["test_cost_ms"]),
                        f"{label}_val_cost_ms": float(point["val_cost_ms"]),
                        f"{label}_vs_maxprob": diff, f"{label}_vs_maxprob_lo": lo,
                        f"{label}_vs_maxprob_hi": hi})
            if capacity and (family, budget) in capacity:
                rps, pm = capacity[(family, budget)]
                row.update({f"{label}_capacity_rps": rps, f"{label}_capacity_pm_rps": pm})
        if capacity and ("maxprob (exp fractions)", budget) in capacity:
            row["maxprob_capacity_rps"] = capacity[("maxprob (exp fractions)", budget)][0]
        out.append(row)
    return pd.DataFrame(out)


def with_ci(r: pd.Series, label: str) -> str:
    """'0.8805 (+0.84 [+0.52, +1.17])': a test accuracy and its paired CI against max-prob, in
    points ('—' where the policy has none)."""
    acc = r.get(f"{label}_test_accuracy")
    if acc is None or acc != acc:
        return "—"
    d, lo, hi = (100 * r[f"{label}_vs_maxprob{s}"] for s in ("", "_lo", "_hi"))
    return f"{acc:.4f} ({d:+.2f} [{lo:+.2f}, {hi:+.2f}])"


def comparison_rows(comparison: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the comparison at each budget as text, for the terminal and the page;
    capacities when it was served."""
    served = "heuristic_capacity_rps" in comparison
    headers = ["budget ms", "best heuristic (on val)", "its accuracy", "EENet", "safe-exit",
               "agreement oracle", "oracle LP",
               *(["capacity req/s: max-prob / heuristic / EENet / safe-exit"] if served else [])]
    rows = []
    for _, r in comparison.iterrows():
        caps = [r.get(c) for c in ("maxprob_capacity_rps", "heuristic_capacity_rps",
                                   "eenet_capacity_rps", "safe-exit_capacity_rps")]
        rows.append([f"{r['budget_ms']:.4g}", str(r["best_heuristic"]), with_ci(r, "heuristic"),
                     with_ci(r, "eenet"), with_ci(r, "safe-exit"),
                     f"{r['agreement_oracle']:.4f}", f"{r['oracle_bound']:.4f}",
                     *([" / ".join("—" if c is None or c != c else f"{c:.4g}" for c in caps)]
                       if served else [])])
    return headers, rows
