"""safe-exit's scorer targets at the frontier's five budgets: agreement, gain (continuing would
not fix it), next-gain (the next exit would not) and auto (the default: the one most accurate
on val, per budget), fitted on val, scored on test; per budget each one's val and test
accuracy and test cost, and the paired 95% bootstrap CI of each − agreement (points), auto's
choice last.

    python benchmarks/safe_exit_targets.py fmnist-c fmnist-resnet-cpu
"""

from __future__ import annotations

import sys

from offramp.analysis.studies.frontier import budgets_for
from offramp.analysis.studies.frontier_compare import paired_ci
from offramp.policies.costs import exit_costs
from offramp.policies.safe_exit import SafeExit
from offramp.policies.safe_scorer import LEARNED_TARGETS, Target
from offramp.profiling.latency import stage_costs
from offramp.profiling.shipped import resolve_profile
from offramp.traces.shipped import load_shipped

TARGETS = (*LEARNED_TARGETS, Target.AUTO)


def main(trace_name: str, profile_name: str) -> None:
    trace = load_shipped(trace_name)
    costs = exit_costs(stage_costs(resolve_profile(profile_name)), 1)
    budgets = budgets_for(costs)
    test = trace.indices("test")
    # One fit_together for every target: the scorers are trained once and shared.
    fits = SafeExit.fit_together([SafeExit(budget_ms=b, costs=costs, target=t)
                                  for t in TARGETS for b in budgets], trace)
    by = {t: fits[i * len(budgets):(i + 1) * len(budgets)] for i, t in enumerate(TARGETS)}
    print(f"{trace_name} on {profile_name}: per budget and target, val acc | test acc (cost) | "
          "− agreement, points [95% CI]")
    for j, b in enumerate(budgets):
        base = trace.correct[test, by[Target.AGREEMENT][j].exit_index(trace, test)]
        for t in TARGETS:
            p = by[t][j]
            exits = p.exit_index(trace, test)
            right = trace.correct[test, exits]
            d, lo, hi = (100 * x for x in paired_ci(right.astype(float), base.astype(float)))
            chosen = f"  (chose {p.scorer_.target})" if t is Target.AUTO else ""
            print(f"{b:.3f} {t.value:>9} | {100 * p.val_accuracy_:.2f} | {100 * right.mean():.2f} "
                  f"({costs[exits].mean():.3f}) | {d:+.2f} [{lo:+.2f}, {hi:+.2f}]{chosen}")


if __name__ == "__main__":
    main(*(sys.argv[1:3] if len(sys.argv) > 2 else ("fmnist-c", "fmnist-resnet-cpu")))
