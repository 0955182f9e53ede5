"""Wall time of ``offramp optimize`` on the shipped fmnist study (the search and the
finalists; baselines left out), with the simulated requests it spent.

    .venv/bin/python benchmarks/optimize_speed.py [--workers 2] [--trials 60]

Prints one line per phase and, last, ``search_s=S finalists_s=F requests=N
requests_per_s=R`` (measured in this run; the goal in issue "offramp optimize" is a search
within 60 s on a 2-core machine).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from offramp.analysis.optimize.goal import Goal, Objective
from offramp.analysis.optimize.run import optimize
from offramp.analysis.optimize.search import Settings

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--study", default=str(REPO / "examples" / "capacity-fmnist.yaml"))
    ap.add_argument("--slo-p99-ms", type=float, default=25.0)
    args = ap.parse_args()
    goal = Goal(Objective.LOAD, args.slo_p99_ms, min_relative_accuracy=0.99)
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.workers) as ex:
        t0 = time.perf_counter()
        res = optimize(args.study, goal, Path(tmp) / "out", ex, Settings(trials=args.trials),
                       baselines=False)
        wall = time.perf_counter() - t0
    total = res.spent["search"] + res.spent["finalists"]
    print(f"winner: {res.winner.point} -> {res.winner.value:.5g} req/s")
    print(f"search: {len(res.trials)} candidates, {res.spent['search']:,} simulated requests, "
          f"{res.seconds['search']:.1f} s; finalists {res.spent['finalists']:,} requests, "
          f"{res.seconds['finalists']:.1f} s; wall {wall:.1f} s on {args.workers} workers")
    print(f"search_s={res.seconds['search']:.1f} finalists_s={res.seconds['finalists']:.1f} "
          f"requests={total} requests_per_s={total / wall:.0f}")


if __name__ == "__main__":
    main()
