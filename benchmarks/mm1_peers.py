"""M/M/1 three ways, one run: offramp's fast engine, a plain SimPy model and a Lindley
recursion in plain Python — customers simulated per second, and each one's mean sojourn time
against queueing theory (1 / (mu - lambda)). Not a test: speed lives here, as ratios measured in
one run (each model run ``--repeats`` times, the fastest counted). Prints the table, then
``offramp_cps=N simpy_cps=N lindley_cps=N`` and the two ratios as its last line.

    taskset -c 0 python benchmarks/mm1_peers.py [--customers 1000000] [--load 0.8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

MEAN_MS = 1.0  # mean service time


def offramp_run(n: int, load: float) -> tuple[float, float]:
    """(seconds, mean sojourn ms): the fast engine on an exponential server, batches of one."""
    import offramp
    from offramp.analysis.study.resolve import build_scenario, load_study_trace
    from offramp.sim.runner import run_replication
    from offramp.sim.scenario import draw_replication

    study = offramp.load_study({
        "trace": {"path": "fmnist-resnet"}, "profile": {"kind": "exponential", "mean_ms": MEAN_MS},
        "server": {"max_batch": 1, "max_wait_ms": 0.0, "exit_mode": "none"},
        "policy": {"name": "none"}, "workload": {"rate_rps": load * 1000.0 / MEAN_MS},
        "run": {"requests": n, "replications": 1, "seed": 0}})
    scenario = build_scenario(study.config, load_study_trace(study.config))
    # One short run first: numba's compiled loop is loaded from its cache (or compiled) once
    # per process, as in any study's first replication.
    short = study.config.run.model_copy(update={"requests": 2000})
    run_replication(scenario, draw_replication(scenario, short, np.random.SeedSequence(1)), "fast")
    rep = draw_replication(scenario, study.config.run, np.random.SeedSequence(0))
    t0 = time.perf_counter()
    rec, _ = run_replication(scenario, rep, "fast")
    return time.perf_counter() - t0, float(np.mean(rec.finish - rec.arrival)) * 1000.0


def simpy_run(n: int, load: float) -> tuple[float, float]:
    """(seconds, mean sojourn ms): the textbook SimPy model (a source, a Resource of 1)."""
    import simpy

    rng = np.random.default_rng(1)
    gaps = rng.exponential(MEAN_MS / load, n).tolist()
    service = rng.exponential(MEAN_MS, n).tolist()
    env, total = simpy.Environment(), [0.0]
    server = simpy.Resource(env, capacity=1)

    def customer(i):
        arrive = env.now
        with server.request() as req:
            yield req
            yield env.timeout(service[i])
        total[0] += env.now - arrive

    def source():
        for i in range(n):
            yield env.timeout(gaps[i])
            env.process(customer(i))

    env.process(source())
    t0 = time.perf_counter()
    env.run()
    return time.perf_counter() - t0, total[0] / n


def lindley_run(n: int, load: float) -> tuple[float, float]:
    """(seconds, mean sojourn ms): W_{k+1} = max(0, W_k + S_k - A_{k+1}), plain Python."""
    rng = np.random.default_rng(2)
    gaps = rng.exponential(MEAN_MS / load, n).tolist()
    service = rng.exponential(MEAN_MS, n).tolist()
    t0 = time.perf_counter()
    wait, total = 0.0, 0.0
    for k in range(n):
        total += wait + service[k]
        if k + 1 < n:
            wait = max(0.0, wait + service[k] - gaps[k + 1])
    return time.perf_counter() - t0, total / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--load", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each model; the fastest counts")
    args = ap.parse_args()
    n, rho = args.customers, args.load
    theory = MEAN_MS / (1.0 - rho)
    rows = {}
    for name, fn in (("offramp", offramp_run), ("simpy", simpy_run), ("lindley", lindley_run)):
        rows[name] = min((fn(n, rho) for _ in range(args.repeats)), key=lambda r: r[0])
    print(f"M/M/1, load {rho}, mean service {MEAN_MS} ms, {n} customers; theory: mean "
          f"sojourn {theory:.3f} ms; the fastest of {args.repeats} runs of each")
    print(f"{'model':<10} {'seconds':>8} {'customers/s':>12} {'mean sojourn ms':>16}")
    cps = {}
    for name, (dt, sojourn) in rows.items():
        cps[name] = n / dt
        print(f"{name:<10} {dt:>8.2f} {cps[name]:>12.0f} {sojourn:>16.3f}")
    print(f"offramp_cps={cps['offramp']:.0f} simpy_cps={cps['simpy']:.0f} "
          f"lindley_cps={cps['lindley']:.0f} offramp/simpy={cps['offramp'] / cps['simpy']:.1f} "
          f"lindley/offramp={cps['lindley'] / cps['offramp']:.1f}")


if __name__ == "__main__":
    main()
