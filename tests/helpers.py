"""Small builders shared by the tests (synthetic data: tests only)."""

from __future__ import annotations

import numpy as np
import pytest

from offramp.policies.base import ExitPolicy
from offramp.profiling.format import LatencyProfile
from offramp.sim.config import ServerConfig, WorkloadConfig
from offramp.sim.scenario import Replication, Scenario
from offramp.sim.service import NoiseStream, ServiceTimes
from offramp.sim.workload import OpenArrivals, workload_from
from offramp.traces.format import ExitTrace, make_trace


def crafted_trace(correct_at: list[list[bool]], n_val: int = 0) -> ExitTrace:
    """A 2-class trace whose sample i is correct exactly at the exits where correct_at[i] is True.

    The first ``n_val`` samples are val, the rest test. Synthetic: tests only.
    """
    ok = np.array(correct_at, dtype=bool)
    n, k = ok.shape
    softmax = np.where(ok[:, :, None], [0.9, 0.1], [0.1, 0.9])
    split = np.r_[np.zeros(n_val), np.ones(n - n_val)].astype(np.uint8)
    meta = {"model_id": "crafted", "dataset": "synthetic", "exit_names": [f"e{i}" for i in range(k)],
            "exit_positions": list(range(1, k + 1)), "produced_by": {"command": "tests"},
            "synthetic": True}
    return make_trace(np.zeros(n, dtype=int), split, softmax, meta)


def affine_profile(n_exits: int, batches: range, seg=(1.0, 0.1), head=(0.5, 0.0),
                   compact=(0.2, 0.05), overhead=(0.1, 0.0), last_head=None,
                   model_id: str = "crafted", check=None, handoff=None) -> LatencyProfile:
    """Stage(b) = a + c*b ms for every batch size in ``batches``; exact, spread-free.

    ``check`` and ``handoff`` (the serving loop's own stages) are left out unless given.
    """
    rows = []

    def add(kind, k, b, ac):
        t = ac[0] + ac[1] * b
        rows.append({"kind": kind, "k": k, "batch": b, "p50_ms": t, "mean_ms": t, "p99_ms": t,
                     "std_ms": 0.0, "runs": 1})

    for b in batches:
        add("overhead", 0, b, overhead)
        for k in range(n_exits):
            add("segment", k, b, seg)
            add("head", k, b, last_head if (last_head and k == n_exits - 1) else head)
            if k < n_exits - 1:
                add("compact", k, b, compact)
                for kind, ac in (("check", check), ("handoff", handoff)):
                    if ac is not None:
                        add(kind, k, b, ac)
    meta = {"model_id": model_id, "n_exits": n_exits, "device": "none", "backend": "synthetic",
            "precision": "n/a", "input_shape": [], "software": {}, "date": "n/a",
            "produced_by": {"command": "tests"}, "synthetic": True}
    return LatencyProfile(rows=rows, meta=meta)


def scenario(trace: ExitTrace, policy: ExitPolicy, service: ServiceTimes, server: ServerConfig,
             workload: WorkloadConfig | None = None, slo_ms: float | None = None) -> Scenario:
    """A scenario from its parts (the workload as a study's section)."""
    return Scenario(trace, policy, service, server, workload_from(workload or WorkloadConfig()),
                    slo_ms)


def fixed_run(trace: ExitTrace, policy: ExitPolicy, service: ServiceTimes, server: ServerConfig,
              arrivals_ms: list[float], samples: list[int], routes=None
              ) -> tuple[Scenario, Replication]:
    """A scenario and one open-loop replication with given arrival times (ms) and samples."""
    rep = Replication(
        requests=OpenArrivals(np.array(arrivals_ms) / 1000.0, np.array(samples)),
        noise=[NoiseStream(np.random.default_rng(r), service.width, service.dist)
               for r in range(server.replicas)],
        route_rng=np.random.default_rng(0),
        routes=None if routes is None else np.asarray(routes),
        controller=None if policy.is_static else policy.controller(server.replicas))
    return scenario(trace, policy, service, server), rep


def scored_trace(conf: list[list[float]], correct: list[list[bool]], n_val: int) -> ExitTrace:
    """A 2-class trace with max probability ``conf[i][k]`` (in [0.5, 1]) and correctness.

    The first ``n_val`` samples are val, the rest test. Label 0; a correct exit puts ``conf``
    on class 0, a wrong one on class 1. Synthetic: tests only.
    """
    p = np.asarray(conf, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    n, k = p.shape
    softmax = np.stack([np.where(ok, p, 1 - p), np.where(ok, 1 - p, p)], axis=2)
    split = np.r_[np.zeros(n_val), np.ones(n - n_val)].astype(np.uint8)
    meta = {"model_id": "scored", "dataset": "synthetic", "exit_names": [f"e{i}" for i in range(k)],
            "exit_positions": list(range(1, k + 1)), "produced_by": {"command": "tests"},
            "synthetic": True}
    return make_trace(np.zeros(n, dtype=int), split, softmax, meta)


def knapsack_bound(correct: np.ndarray, costs: np.ndarray, budget: float) -> float:
    """Fractional knapsack: greedily make the cheapest-to-fix samples right."""
    n = correct.shape[0]
    first = np.where(correct.any(axis=1), correct.argmax(axis=1), -1)
    extra = np.sort(costs[first[first >= 0]] - costs[0])
    room = n * (budget - costs[0])
    got = 0.0
    for w in extra:
        if w <= room + 1e-12:
            got, room = got + 1, room - w
        else:
            got += room / w
            break
    return got / n


def _have_fmnist() -> bool:
    try:
        from offramp.traces.datasets import fashion_mnist_dir

        fashion_mnist_dir()
        return True
    except Exception:  # noqa: BLE001 - the dataset package is missing
        return False


# Tests that serve real Fashion-MNIST images (CI installs Debian's dataset-fashion-mnist as root).
HAVE_FMNIST = _have_fmnist()
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST,
                                  reason="Debian dataset-fashion-mnist is not installed")

