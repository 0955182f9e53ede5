"""Simulated requests per second where the next step depends on server state: join-shortest-
queue routing, closed-loop clients and Dynamic-OFA's runtime manager, the fast engine's event
loop (numba) against the per-request reference, on the same study and one core.

The shipped fmnist trace and CPU profile (its calibrated cost model), entropy τ = 99, shrink,
max_batch 32, four replicas: open-loop Poisson at 90% of their full-batch capacity routed by
join-shortest-queue, and 256 closed-loop clients (think 1 ms) routed by join-shortest-queue
and by round robin; then Dynamic-OFA (entropy levels τ = 95 / 98 / 100, the window mean
held under half a full-batch time, switch cost 0.5 ms) at the same load on round-robin
replicas. The fast engine's best of two runs after a first (which compiles the batch shapes
it meets). Prints a table, then ``jsq_ratio=X closed_jsq_ratio=Y closed_rr_ratio=Z
dofa_ratio=W`` as its last line.

    taskset -c 0 python benchmarks/dynamic_speed.py [--requests 1000000]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from sim_speed import inputs  # noqa: E402

from offramp.core.execution import no_exit  # noqa: E402
from offramp.core.modes import ExitMode  # noqa: E402
from offramp.policies import make_policy, policy_config  # noqa: E402
from offramp.profiling.latency import stage_costs  # noqa: E402
from offramp.sim.config import RunConfig, ServerConfig, WorkloadConfig  # noqa: E402
from offramp.sim.runner import run_replication  # noqa: E402
from offramp.sim.scenario import Scenario, draw_replication  # noqa: E402
from offramp.sim.service import ServiceTimes  # noqa: E402
from offramp.sim.workload import workload_from  # noqa: E402

REPLICAS = 4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--reference-requests", type=int, default=50_000)
    args = ap.parse_args()
    trace, profile, what = inputs()
    model = stage_costs(profile)
    svc = ServiceTimes.from_latency(model, n_exits=trace.n_exits, max_batch=32,
                                    mode=ExitMode.SHRINK, sampled=True)
    full_batch_s = svc.plan_s(no_exit(32, trace.n_exits))
    rate = 0.9 * REPLICAS * 32 / full_batch_s
    policy = make_policy(policy_config(name="entropy", tolerance_pct=99)).fit(trace)
    studies = {
        "open loop, jsq": (WorkloadConfig(rate_rps=rate), "jsq"),
        "closed loop, jsq": (WorkloadConfig(kind="closed", clients=256, think_ms=1.0), "jsq"),
        "closed loop, round robin": (WorkloadConfig(kind="closed", clients=256, think_ms=1.0),
                                     "round_robin"),
        "dynamic-ofa, round robin": (WorkloadConfig(rate_rps=rate), "round_robin"),
    }
    levels = [{"name": "entropy", "tolerance_pct": t} for t in (95, 98, 100)]
    dofa = make_policy(policy_config(
        name="dynamic-ofa", levels=levels, latency_target_ms=500 * full_batch_s,
        accuracy_target=0.99, switch_cost_ms=0.5)).fit(trace)
    print(f"inputs: {what}; {model.costs.value} cost model; shrink, max_batch 32, "
          f"{REPLICAS} replicas; one core")
    print(f"{'study':<26} {'engine':<10} {'requests':>9} {'seconds':>8} {'req/s':>10}")
    ratios = []
    for name, (wl, routing) in studies.items():
        server = ServerConfig(max_batch=32, max_wait_ms=1000 * full_batch_s / 4,
                              exit_mode="shrink", replicas=REPLICAS, routing=routing)
        sc = Scenario(trace, dofa if name.startswith("dynamic") else policy, svc, server,
                      workload_from(wl))
        rps = {"fast": 0.0}
        # The first fast run compiles the batch shapes it meets: the best of the next two.
        for engine, n in (("fast", args.requests), ("fast", args.requests),
                          ("fast", args.requests), ("reference", args.reference_requests)):
            rep = draw_replication(sc, RunConfig(requests=n), np.random.SeedSequence(0))
            t0 = time.perf_counter()
            rec, used = run_replication(sc, rep, engine)
            dt = time.perf_counter() - t0
            assert used == engine
            rps[engine] = max(rps.get(engine, 0.0), n / dt)
        for engine, n in (("fast", args.requests), ("reference", args.reference_requests)):
            print(f"{name:<26} {engine:<10} {n:>9} {n / rps[engine]:>8.2f} {rps[engine]:>10.0f}")
        ratios.append(rps["fast"] / rps["reference"])
        if rep.controller is not None:
            print(f"{'':<26} (the manager switched {len(rep.controller.history) - 1} times in "
                  f"the last run; mean exit {rec.exit.mean():.2f})")
    print(f"jsq_ratio={ratios[0]:.1f} closed_jsq_ratio={ratios[1]:.1f} "
          f"closed_rr_ratio={ratios[2]:.1f} dofa_ratio={ratios[3]:.1f}")


if __name__ == "__main__":
    main()
