"""safe-exit's two scorer targets at the frontier's five budgets: agreement (the default) and
gain (continuing would not fix it), fitted on val, scored on test, with the paired 95%
bootstrap CI of gain − agreement (points of accuracy) and each one's cost.

    python benchmarks/safe_exit_targets.py fmnist-c fmnist-resnet-cpu
"""

from __future__ import annotations

import sys

from offramp.analysis.studies.frontier import budgets_for
from offramp.analysis.studies.frontier_compare import paired_ci
from offramp.policies.costs import exit_costs
from offramp.policies.safe_exit import SafeExit
from offramp.profiling.latency import stage_costs
from offramp.profiling.shipped import resolve_profile
from offramp.traces.shipped import load_shipped


def main(trace_name: str, profile_name: str) -> None:
    trace = load_shipped(trace_name)
    costs = exit_costs(stage_costs(resolve_profile(profile_name)), 1)
    budgets = budgets_for(costs)
    test = trace.indices("test")
    right = {}
    for target in ("agreement", "gain"):
        fits = SafeExit.fit_together([SafeExit(budget_ms=b, costs=costs, target=target)
                                      for b in budgets], trace)
        right[target] = [(trace.correct[test, p.exit_index(trace, test)],
                          costs[p.exit_index(trace, test)].mean()) for p in fits]
    print(f"{trace_name} on {profile_name}: budget ms | agreement acc (cost) | gain acc (cost) "
          "| gain - agreement, points [95% CI]")
    for b, (a, ca), (g, cg) in zip(budgets, right["agreement"], right["gain"], strict=True):
        d, lo, hi = (100 * x for x in paired_ci(g.astype(float), a.astype(float)))
        print(f"{b:.3f} | {100 * a.mean():.2f} ({ca:.3f}) | {100 * g.mean():.2f} ({cg:.3f}) | "
              f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]")


if __name__ == "__main__":
    main(*sys.argv[1:3])
