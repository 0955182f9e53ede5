"""Saved policies: the exit table reproduces the fitted policy exactly and refuses other traces."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import scenario

from offramp.common.errors import InputError
from offramp.core.modes import ExitMode
from offramp.policies.confidence import Entropy
from offramp.policies.table import ExitTable, load_policy, save_policy
from offramp.profiling.latency import LatencyModel
from offramp.profiling.synthetic import synthetic_profile
from offramp.sim.config import RunConfig, ServerConfig, WorkloadConfig
from offramp.sim.runner import simulate
from offramp.sim.service import ServiceTimes
from offramp.traces.synthetic import synthetic_trace


def test_saved_policy_simulates_identically(tmp_path):
    trace = synthetic_trace(2000, seed=5)
    policy = Entropy(tolerance_pct=98).fit(trace)
    path = save_policy(ExitTable.from_policy(policy, trace), tmp_path / "p.json", {"note": "x"})
    loaded = load_policy(path).fit(trace)
    ids = np.arange(trace.n_samples)
    assert np.array_equal(loaded.exit_index(trace, ids), policy.exit_index(trace, ids))
    exits = policy.exit_index(trace, ids)
    for k in range(trace.n_exits):
        reach = ids[exits >= k]  # the decision at k matters only for samples that reach k
        assert np.array_equal(loaded.decide(trace, k, reach), policy.decide(trace, k, reach))
    svc = ServiceTimes.from_latency(LatencyModel(synthetic_profile()), n_exits=4, max_batch=16,
                                    mode=ExitMode.SHRINK, sampled=True)
    runs = [simulate(scenario(trace, p, svc, ServerConfig(max_batch=16),
                              WorkloadConfig(rate_rps=3000)),
                     RunConfig(requests=3000, replications=1, engine="reference"))
            for p in (policy, loaded)]
    assert np.array_equal(runs[0].records[0].finish, runs[1].records[0].finish)


def test_saved_policy_rejects_another_trace(tmp_path):
    trace = synthetic_trace(500, seed=1)
    path = save_policy(ExitTable.from_policy(Entropy(tolerance_pct=99).fit(trace), trace),
                       tmp_path / "p.json")
    with pytest.raises(InputError, match="fitted on a different trace"):
        load_policy(path).fit(synthetic_trace(500, seed=2))
    path.write_text('{"format": "offramp-policy", "version": 1}')
    with pytest.raises(InputError, match="field 'policy'"):
        load_policy(path)
