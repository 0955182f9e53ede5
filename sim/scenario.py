"""What a study serves (a frozen :class:`Scenario`) and one replication of it.

The study layer builds one Scenario: the trace, the fitted policy, the stage-time tables, the
server and the workload. Nothing in it changes while runs go on, so many replications (and
threads or processes) can share it. :func:`draw_replication` draws everything that differs
between replications from the replication's own seed: its requests, the stage-time noise of
each replica, the routing, and a fresh controller for a stateful policy.

Randomness: the replication's ``SeedSequence`` spawns five named streams in a fixed order
(arrivals, samples, routing, think times, noise), the noise stream one child per replica.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from offramp.policies.base import Controller, ExitPolicy
from offramp.traces.format import ExitTrace

from .config import RunConfig, ServerConfig
from .service import NoiseStream, ServiceTimes
from .workload import ClosedClients, ClosedLoop, OpenArrivals, Workload, route_static


@dataclass(frozen=True, eq=False)
class Scenario:
    """Everything one study serves, built once and shared read-only by every run."""

    trace: ExitTrace
    policy: ExitPolicy  # fitted
    service: ServiceTimes
    server: ServerConfig
    workload: Workload
    slo_ms: float | None = None  # per-request latency objective the summary judges against


@dataclass(frozen=True, eq=False)
class Replication:
    """One replication's draws and run-time state.

    ``requests``: open-loop arrivals or closed-loop clients; ``noise``: one stream per replica;
    ``routes``: the replica of each open-loop request under round robin / random routing
    (None where the server decides: shared queue, join-shortest-queue, one replica);
    ``controller``: a stateful policy's state for this run (None for static policies).
    Single-use: a run consumes its noise streams (the compiled fast loop draws their chunks
    without keeping them), so each run draws its own replication.
    """

    requests: OpenArrivals | ClosedClients
    noise: list[NoiseStream]
    route_rng: np.random.Generator
    routes: np.ndarray | None = None
    controller: Controller | None = None


def draw_replication(scenario: Scenario, run: RunConfig,
                     seed: np.random.SeedSequence) -> Replication:
    """Draw one replication of ``scenario`` from its own seed."""
    s_arr, s_smp, s_route, s_think, s_noise = seed.spawn(5)
    svc, srv = scenario.service, scenario.server
    noise = [NoiseStream(np.random.default_rng(s), svc.width, svc.dist, svc.corr)
             for s in s_noise.spawn(srv.replicas)]
    route_rng = np.random.default_rng(s_route)
    test_ids = scenario.trace.indices("test")
    wl = scenario.workload
    first = s_think if isinstance(wl, ClosedLoop) else s_arr
    requests = wl.draw(np.random.default_rng(first), np.random.default_rng(s_smp), test_ids,
                       run.requests, run.duration_s)
    routes = None
    if (isinstance(requests, OpenArrivals) and srv.routing in ("round_robin", "random")
            and srv.replicas > 1 and srv.pipeline is None):  # a pipeline takes all at group 0
        routes = route_static(srv.routing, requests.times.size, srv.replicas, route_rng)
    controller = None if scenario.policy.is_static else scenario.policy.controller(srv.replicas)
    return Replication(requests, noise, route_rng, routes, controller)
