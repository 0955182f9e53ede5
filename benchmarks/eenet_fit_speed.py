"""How long EENet's fits take: every seed's fit alone (one after another, as offramp trained
them before 2026-12-06, session 8) against the seeds trained side by side in their fixed
groups (policies/eenet_train.py), on one core, the same fits to the last epoch.

The shipped fmnist trace, its CPU profile's default costs, EENet as published (10 fits, lr
3e-5, up to ``--epochs`` epochs) at a budget of 1.24 ms per sample (the frontier's second).
Prints each way's wall time, then whether the fits agree (val cost and accuracy of every fit,
kept epochs), and ``grouped_s=A alone_s=B speedup=C`` as its last line.

    taskset -c 0 python benchmarks/eenet_fit_speed.py [--epochs 1000] [--budget-ms 1.24]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from offramp.policies import eenet_train  # noqa: E402
from offramp.policies.costs import exit_costs  # noqa: E402
from offramp.policies.eenet import EENet  # noqa: E402
from offramp.profiling.latency import stage_costs  # noqa: E402
from offramp.profiling.shipped import resolve_profile  # noqa: E402
from offramp.traces.shipped import load_shipped  # noqa: E402


def timed(n_groups: int, trace, kw: dict) -> tuple[float, EENet]:  # noqa: ANN001
    eenet_train.FIT_GROUPS = n_groups
    t0 = time.perf_counter()
    pol = EENet(**kw).fit(trace)
    return time.perf_counter() - t0, pol


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--fits", type=int, default=10)
    ap.add_argument("--budget-ms", type=float, default=1.24)
    args = ap.parse_args()
    trace = load_shipped("fmnist-resnet")
    costs = exit_costs(stage_costs(resolve_profile("fmnist-resnet-cpu")), 1)
    kw = {"budget_ms": args.budget_ms, "costs": costs, "n_fits": args.fits,
          "epochs": args.epochs}
    grouped_s, grouped = timed(2, trace, kw)
    print(f"{args.fits} fits in 2 groups side by side: {grouped_s:.1f} s")
    alone_s, alone = timed(args.fits, trace, kw)
    print(f"{args.fits} fits one by one:              {alone_s:.1f} s")
    for a, b in zip(grouped.fits_, alone.fits_, strict=True):
        print(f"  cost {a['cost']:.4f} / {b['cost']:.4f} ms, accuracy {a['accuracy']:.4f} / "
              f"{b['accuracy']:.4f}, epochs {a['epochs']} / {b['epochs']}, kept "
              f"{a['kept_epoch']} / {b['kept_epoch']}")
    print(f"grouped_s={grouped_s:.1f} alone_s={alone_s:.1f} speedup={alone_s / grouped_s:.2f}")


if __name__ == "__main__":
    main()
