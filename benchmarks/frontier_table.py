"""The README's policy comparison rows from `offramp frontier` folders.

    .venv/bin/python benchmarks/frontier_table.py runs/frontier/fmnist runs/frontier/minilm ...

Reads each folder's MODEL-frontier-budgets.csv (written by `offramp frontier -o DIR`) and prints
one markdown row per budget: the best heuristic chosen on val, EENet and safe-exit with their
paired 95% CIs against max-prob (in points), the agreement oracle and the oracle LP bound.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def _acc(r: pd.Series, who: str) -> str:
    acc = r.get(f"{who}_test_accuracy")
    if acc is None or acc != acc:
        return "–"
    d, lo, hi = (100 * r[f"{who}_vs_maxprob{s}"] for s in ("", "_lo", "_hi"))
    cost = r[f"{who}_test_cost_ms"]
    return f"{acc:.4f} ({d:+.2f} [{lo:+.2f}, {hi:+.2f}]; {cost:.3g} ms)"


def rows(folder: Path) -> list[str]:
    out = []
    for path in sorted(folder.glob("*-frontier-budgets.csv")):
        model = path.name.removesuffix("-frontier-budgets.csv")
        for _, r in pd.read_csv(path).iterrows():
            out.append(f"| {model} | {r['budget_ms']:.3g} | "
                       f"{r['best_heuristic']} {r['heuristic_test_accuracy']:.4f} | "
                       f"{_acc(r, 'eenet')} | {_acc(r, 'safe-exit')} | "
                       f"{r['agreement_oracle']:.4f} | {r['oracle_bound']:.4f} |")
    return out


def main() -> None:
    print("| trace | budget ms | best heuristic (on val), test accuracy | EENet | safe-exit "
          "| agreement oracle | oracle LP |")
    print("|---|---|---|---|---|---|---|")
    for folder in sys.argv[1:]:
        print("\n".join(rows(Path(folder))))


if __name__ == "__main__":
    main()
