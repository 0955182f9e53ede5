"""Peak memory per simulated request: the fast engine on 10 million requests, one replication.

Each measurement runs in a fresh process (peak RSS is per process): the shipped fmnist study
with its calibrated (served) cost model, shrink, max_batch 32, at 90% of a full batch's rate —
once as capacity probes run it (no per-stage breakdown) and once as ``simulate`` records it
(each request's time by stage kind). What is counted: the replication's draws (arrivals,
samples, noise) and the run's records, above the process's footprint before the draw. Prints a
table, then ``bytes_per_request=N bytes_per_request_with_parts=N`` as its last line.

    python benchmarks/sim_memory.py [--requests 10000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np
from offramp.core.execution import no_exit
from offramp.core.modes import ExitMode
from offramp.policies import make_policy, policy_config
from offramp.profiling.format import load_profile
from offramp.profiling.latency import stage_costs
from offramp.profiling.shipped import shipped_profile_path
from offramp.sim.config import RunConfig, ServerConfig, WorkloadConfig
from offramp.sim.runner import run_replication
from offramp.sim.scenario import Scenario, draw_replication
from offramp.sim.service import ServiceTimes
from offramp.sim.workload import workload_from
from offramp.traces.format import load_trace
from offramp.traces.shipped import shipped_trace_path

n, parts = int(sys.argv[1]), sys.argv[2] == "1"
trace = load_trace(shipped_trace_path("fmnist-resnet"))
model = stage_costs(load_profile(shipped_profile_path("fmnist-resnet-cpu")))
svc = ServiceTimes.from_latency(model, n_exits=4, max_batch=32, mode=ExitMode.SHRINK, sampled=True)
full = svc.plan_s(no_exit(32, 4))
policy = make_policy(policy_config(name="entropy", tolerance_pct=99)).fit(trace)
server = ServerConfig(max_batch=32, max_wait_ms=1000 * full / 4, exit_mode="shrink")
sc = Scenario(trace, policy, svc, server, workload_from(WorkloadConfig(rate_rps=0.9 * 32 / full)))
small = draw_replication(sc, RunConfig(requests=2000), np.random.SeedSequence(1))
run_replication(sc, small, "fast", breakdown=parts)  # compiled code and imports loaded
del small
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rep = draw_replication(sc, RunConfig(requests=n), np.random.SeedSequence(0))
rec, engine = run_replication(sc, rep, "fast", breakdown=parts)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "peak_kib": peak, "engine": engine,
                  "batches": int(rec.batch_sizes.shape[0])}))
"""


def measure(n: int, parts: bool) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(n), "1" if parts else "0"],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000_000)
    args = ap.parse_args()
    rows = {"no breakdown (capacity probes)": measure(args.requests, False),
            "with breakdown (simulate)": measure(args.requests, True)}
    print(f"fast engine, {args.requests:,} requests, one replication, peak RSS above the "
          f"footprint before the draw")
    print(f"{'run':<32} {'batches':>10} {'peak MiB':>9} {'bytes/request':>14}")
    per = {}
    for label, r in rows.items():
        extra = (r["peak_kib"] - r["before_kib"]) * 1024
        per[label] = extra / args.requests
        print(f"{label:<32} {r['batches']:>10} {r['peak_kib'] / 1024:>9.0f} {per[label]:>14.0f}")
    print(f"bytes_per_request={per['no breakdown (capacity probes)']:.0f} "
          f"bytes_per_request_with_parts={per['with breakdown (simulate)']:.0f}")


if __name__ == "__main__":
    main()
