"""Simulated requests per second of the fast engine and of the per-request reference.

Same study for both: a 4-exit model, exit mode shrink, max_batch 32, sampled latencies, an
entropy policy at τ = 99, Poisson load at 90% of one replica's full-batch capacity. Runs on one
core. Prints a table, then ``fast_rps=N reference_rps=N ratio=X`` as its last line.

    python benchmarks/sim_speed.py [--requests 1000000] [--reference-requests 100000]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from offramp.core.execution import no_exit  # noqa: E402
from offramp.core.modes import ExitMode
from offramp.policies import make_policy, policy_config  # noqa: E402
from offramp.profiling.latency import LatencyModel  # noqa: E402
from offramp.sim.config import RunConfig, ServerConfig, WorkloadConfig  # noqa: E402
from offramp.sim.runner import run_replication  # noqa: E402
from offramp.sim.scenario import Scenario, draw_replication  # noqa: E402
from offramp.sim.service import ServiceTimes  # noqa: E402
from offramp.sim.workload import workload_from  # noqa: E402


def inputs():
    """The shipped 4-exit Fashion-MNIST trace and its profile if present, else synthetic."""
    try:
        from offramp.profiling.format import load_profile
        from offramp.profiling.shipped import shipped_profile_path
        from offramp.traces.format import load_trace
        from offramp.traces.shipped import shipped_trace_path

        trace = load_trace(shipped_trace_path("fmnist-resnet"))
        profile = load_profile(shipped_profile_path("fmnist-resnet-cpu"))
        return trace, profile, "shipped fmnist-resnet trace + fmnist-resnet-cpu profile"
    except Exception:  # noqa: BLE001 - fall back to synthetic inputs when nothing is shipped
        from offramp.profiling.synthetic import synthetic_profile
        from offramp.traces.synthetic import synthetic_trace

        return synthetic_trace(10_000), synthetic_profile(), "SYNTHETIC trace + profile"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--reference-requests", type=int, default=100_000)
    args = ap.parse_args()
    trace, profile, what = inputs()
    k_exits = trace.n_exits
    svc = ServiceTimes.from_latency(LatencyModel(profile), n_exits=k_exits, max_batch=32,
                                    mode=ExitMode.SHRINK, sampled=True)
    full_batch_s = svc.plan_s(no_exit(32, k_exits))
    rate = 0.9 * 32 / full_batch_s
    policy = make_policy(policy_config(name="entropy", tolerance_pct=99)).fit(trace)
    server = ServerConfig(max_batch=32, max_wait_ms=1000 * full_batch_s / 4, exit_mode="shrink")
    out = {}
    # "fast": the search path (capacity probes, optimize: no per-stage breakdown); "fast+parts":
    # with each request's time by stage kind, as simulate records it.
    for label, engine, n, parts in (("fast", "fast", args.requests, False),
                                    ("fast+parts", "fast", args.requests, True),
                                    ("reference", "reference", args.reference_requests, True)):
        scenario = Scenario(trace, policy, svc, server, workload_from(WorkloadConfig(rate_rps=rate)))
        rep = draw_replication(scenario, RunConfig(requests=n), np.random.SeedSequence(0))
        t0 = time.perf_counter()
        rec, _ = run_replication(scenario, rep, engine, breakdown=parts)
        dt = time.perf_counter() - t0
        out[label] = (n / dt, dt, n, rec.batch_sizes[:, 0].mean())
    print(f"inputs: {what}; {k_exits} exits, shrink, max_batch 32, rate {rate:.0f} req/s")
    print(f"{'engine':<10} {'requests':>10} {'seconds':>8} {'mean batch':>10} {'req/s':>12}")
    for engine, (rps, dt, n, mb) in out.items():
        print(f"{engine:<10} {n:>10} {dt:>8.2f} {mb:>10.1f} {rps:>12.0f}")
    fast, ref = out["fast"][0], out["reference"][0]
    print(f"fast_rps={fast:.0f} fast_parts_rps={out['fast+parts'][0]:.0f} reference_rps={ref:.0f} "
          f"ratio={fast / ref:.1f}")


if __name__ == "__main__":
    main()
