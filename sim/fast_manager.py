"""Dynamic-OFA's runtime manager inside the compiled event loop (:mod:`.fast_events`).

The manager's rule is compiled from its one home, :mod:`offramp.policies.ofa_rule`; the run's
state is the :class:`~offramp.policies.dynamic_ofa.ManagerRun`'s own arrays, changed in place,
so its ``history`` afterwards is the run's. A batch's requests exit where the level the batch
began with sends them: each level's exit for every sample of the trace, computed once per run.

The event loop that calls these is cached by numba, whose cache notices a change to the loop's
own file only: after editing ``policies/ofa_rule.py``, remove the ``*.nbi``/``*.nbc`` files
under ``sim/__pycache__`` (as :mod:`.fast_kernels` says for the batching rule).
"""

from __future__ import annotations

import types

import numpy as np

from offramp.policies import ofa_rule
from offramp.policies.dynamic_ofa import DynamicOFA, ManagerRun

from .fast_kernels import numba
from .scenario import Scenario


def _compiled_rule() -> dict:
    """The rule's functions compiled, each calling the others' compiled twins: copies of them
    over a copy of the rule module's namespace (its constants and imports included)."""
    ns = dict(vars(ofa_rule))
    for name in ("pairwise_sum", "since", "window_mean", "_switch", "room", "observe",
                 "begin_batch"):
        fn = getattr(ofa_rule, name)
        ns[name] = numba.njit(cache=False)(types.FunctionType(fn.__code__, ns, name))
    return ns


if numba is not None:
    _rule = _compiled_rule()
    observe, begin_batch, room = _rule["observe"], _rule["begin_batch"], _rule["room"]


def manages(scenario: Scenario) -> bool:
    """Whether the scenario's policy is a manager the compiled loop runs."""
    return isinstance(scenario.policy, DynamicOFA)


def level_exits(scenario: Scenario) -> np.ndarray:
    """(levels, samples of the trace) int64: where each level sends each sample."""
    trace, policy = scenario.trace, scenario.policy
    ids = np.arange(trace.n_samples)
    if not scenario.server.exit_mode.consults_early_exits:
        return np.full((len(policy.levels), ids.size), trace.n_exits - 1, np.int64)
    return np.stack([lvl.exit_index(trace, ids) for lvl in policy.levels]).astype(np.int64)


def manager_arrays(ctrl: ManagerRun | None, lv_ex: np.ndarray, samples: np.ndarray) -> tuple:
    """The loop's manager argument: the run's state arrays, each level's exits and every
    request's sample (placeholders where no manager runs)."""
    if ctrl is None:
        z, i = np.zeros(1), np.zeros(1, np.int64)
        return (np.zeros(7, np.int64), np.zeros(3), np.zeros(4, np.int64), np.zeros(7), z, z,
                z, z, i, i, i, np.zeros((1, 1), np.int64), i)
    a = ctrl.arrays
    return (ctrl.st, ctrl.sf, ctrl.pi, ctrl.pf, ctrl.level_acc, a["win_c"], a["win_l"],
            a["hist_t"], a["hist_l"], a["active"], a["loaded"], lv_ex, samples)
