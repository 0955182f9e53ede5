"""safe-exit: a learned P(exit agrees with the full model), one threshold fitted on val.

The traces here are synthetic (labelled so), built so that what max-prob sees is misleading.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from offramp.common.errors import InputError
from offramp.policies.budget import exp_fractions
from offramp.policies.confidence import MaxProb
from offramp.policies.costs import average_cost
from offramp.policies.parse import parse_policy
from offramp.policies.registry import build_policy
from offramp.policies.safe_exit import SafeExit, exits_at
from offramp.traces.format import SPLITS, make_trace
from offramp.traces.synthetic import synthetic_trace

COSTS = [1.0, 2.0, 3.0]


def miscalibrated_trace(n: int = 4000, seed: int = 0):
    """3 exits, 4 classes. Exit 0 is right and sure for classes 1-3 and for half of class 0;
    for the other half of class 0 it is as sure (max-prob 0.93) but wrong (says class 1), with
    a tell-tale second choice (class 0 at 0.05, where a right class-1 answer puts its spare
    mass on class 2). Exit 1 is right for every sample but unsure on class 0 (max-prob 0.6);
    the last exit is right for all. Max-prob cannot tell the confident mistakes apart;
    a scorer that reads the softmax can. Synthetic: tests only."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    sm = np.full((n, 3, 4), 0.0)
    fooled = (labels == 0) & (rng.random(n) < 0.5)
    for i in range(n):
        y = labels[i]
        sure = 0.93 + 0.04 * rng.random()
        if fooled[i]:
            sm[i, 0] = [0.05, sure, 0.0, 0.0]
        else:
            spare = 2 if y == 1 else (y + 1) % 4
            sm[i, 0, y], sm[i, 0, spare] = sure, 0.05
        sm[i, 1, y] = 0.6 if y == 0 else 0.9
        sm[i, 2, y] = 0.99
    sm += 1e-3
    sm /= sm.sum(axis=2, keepdims=True)
    split = np.where(np.arange(n) % 2 == 0, SPLITS.index("val"), SPLITS.index("test"))
    meta = {"model_id": "synthetic-miscalibrated", "dataset": "synthetic",
            "exit_names": ["e0", "e1", "e2"], "exit_positions": [0.33, 0.66, 1.0],
            "produced_by": {"command": "miscalibrated_trace()"}, "synthetic": True}
    return make_trace(labels, split, sm, meta)


def _score(policy, trace, split):
    ids = trace.indices(split)
    exits = policy.exit_index(trace, ids)
    return float(trace.correct[ids, exits].mean()), average_cost(exits, COSTS)


def test_beats_maxprob_where_confidence_is_miscalibrated_for_one_class():
    trace = miscalibrated_trace()
    for budget in (1.3, 1.6):
        safe = SafeExit(budget_ms=budget, costs=COSTS).fit(trace)
        maxprob = MaxProb(fractions=exp_fractions(COSTS, budget)).fit(trace)
        s_acc, s_cost = _score(safe, trace, "test")
        m_acc, m_cost = _score(maxprob, trace, "test")
        assert s_cost <= budget * 1.05 and m_cost <= budget * 1.05
        assert s_acc >= m_acc + 0.03, (budget, s_acc, m_acc)
    # At the tolerance rule too: full accuracy kept for less compute than max-prob needs.
    safe = SafeExit(tolerance_pct=99.5).fit(trace)
    maxprob = MaxProb(tolerance_pct=99.5).fit(trace)
    assert _score(safe, trace, "test")[1] < _score(maxprob, trace, "test")[1] - 0.1


@pytest.mark.parametrize("seed", [0, 1])
def test_never_above_its_budget_on_val(seed):
    trace = synthetic_trace(n_samples=1500, n_exits=3, seed=seed)
    for budget in (1.05, 1.5, 2.2, 2.9):
        policy = SafeExit(budget_ms=budget, costs=COSTS, folds=3).fit(trace)
        assert _score(policy, trace, "val")[1] <= budget + 1e-9
        assert policy.val_cost_ms_ == pytest.approx(_score(policy, trace, "val")[1])


def test_val_scores_are_cross_fitted_and_test_labels_never_read():
    trace = miscalibrated_trace(n=1200)
    policy = SafeExit(tolerance_pct=99.0, folds=4).fit(trace)
    val = trace.indices("val")
    scores = policy.scores(trace)
    np.testing.assert_array_equal(scores[val, :-1], policy.scorer_.oof)
    # The fold models' mean differs from the cross-fitted scores somewhere on val.
    assert not np.allclose(policy._compute_scores(dataclasses.replace(
        trace, split=np.full_like(trace.split, SPLITS.index("test"))))[val, :-1], policy.scorer_.oof)
    # Scrambling the test split's labels changes nothing the fit chose.
    test = trace.indices("test")
    labels = trace.labels.copy()
    labels[test] = (labels[test] + 1) % 4
    scrambled = dataclasses.replace(trace, labels=labels,
                                    correct=trace.pred == labels[:, None])
    again = SafeExit(tolerance_pct=99.0, folds=4).fit(scrambled)
    assert again.threshold_ == policy.threshold_
    np.testing.assert_array_equal(again.scorer_.oof, policy.scorer_.oof)


def test_same_seed_same_fit_and_exits_at_counts_prefix_maxima():
    trace = synthetic_trace(n_samples=800, n_exits=3, seed=3)
    a = SafeExit(budget_ms=1.8, costs=COSTS, folds=3, seed=7).fit(trace)
    b = SafeExit(budget_ms=1.8, costs=COSTS, folds=3, seed=7).fit(trace)
    assert a.threshold_ == b.threshold_
    np.testing.assert_array_equal(a.exit_index(trace, np.arange(800)),
                                  b.exit_index(trace, np.arange(800)))
    prefix = np.maximum.accumulate(np.array([[0.2, 0.9], [0.5, 0.1], [0.95, 0.0]]), axis=1)
    np.testing.assert_array_equal(exits_at(prefix, np.array([0.1, 0.6, 0.92, 2.0])),
                                  [[0, 0, 0], [1, 2, 0], [2, 2, 0], [2, 2, 2]])


def test_config_and_errors():
    with pytest.raises(InputError, match="exactly one"):
        parse_policy({"name": "safe-exit"})
    with pytest.raises(InputError, match="exactly one"):
        parse_policy({"name": "safe-exit", "budget_ms": 2.0, "tolerance_pct": 99})
    trace = synthetic_trace(n_samples=400, n_exits=3)
    with pytest.raises(InputError, match="latency profile"):
        build_policy({"name": "safe-exit", "budget_ms": 2.0}, trace)
    with pytest.raises(InputError, match="below the first exit"):
        SafeExit(budget_ms=0.5, costs=COSTS).fit(trace)
    policy = build_policy({"name": "safe-exit", "tolerance_pct": 99}, trace)
    assert policy.get_params()["threshold"] == policy.threshold_
    assert "P(same answer" in policy.explain()


def test_budgets_fitted_together_share_one_scorer_and_give_the_same_policies():
    # A frontier's safe-exit budgets train the scorer once (the budget only moves the
    # threshold): the same thresholds and exits as fitting each alone.
    from offramp.policies.registry import build_policies

    tr = miscalibrated_trace(1200, seed=3)
    from offramp.profiling.synthetic import synthetic_profile

    prof = synthetic_profile(n_exits=3)
    cfgs = [{"name": "safe-exit", "budget_ms": b} for b in (1.2, 1.6)] + [
        {"name": "safe-exit", "tolerance_pct": 99.0}, {"name": "safe-exit", "budget_ms": 1.6,
                                                       "seed": 1}]
    together = list(build_policies(cfgs, tr, prof))
    trained = {t: p.scorer_ for p in together[:3] for t in [p.scorer_.target]}
    for p in together[:3]:  # one scorer per target, shared by every budget that keeps it
        assert p.scorer_ is trained[p.scorer_.target]
    assert all(together[3].scorer_ is not s for s in trained.values())  # another seed
    for cfg, joint in zip(cfgs, together, strict=True):
        alone = build_policy(cfg, tr, prof)
        assert joint.threshold_ == alone.threshold_
        assert joint.val_accuracy_ == alone.val_accuracy_
        every = np.arange(tr.n_samples)
        assert np.array_equal(joint.exit_index(tr, every), alone.exit_index(tr, every))


def hopeless_trace(n: int = 3000, seed: int = 0):
    """3 exits, 3 classes. A: right everywhere (exit 0 sure, [.8, .1, .1] around its class).
    B: wrong at every exit, and exit 0's wrong answer differs from the last exit's — with a
    tell-tale exit-0 softmax (split between two wrong classes). C: wrong at exit 0 (max-prob
    0.45 on a wrong class) and right from exit 1 on. Continuing fixes C, never B. Synthetic:
    tests only."""
    return _three_groups(n, seed, "hopeless", [0.4, 0.3, 0.3], last_right=False)


def _three_groups(n: int, seed: int, name: str, shares: list[float], last_right: bool):
    """The A/B/C traces above: 3 exits, 3 classes, groups drawn with ``shares``; B wrong at
    exits 0 and 1 (exit 0 split between two wrong classes), and at the last unless
    ``last_right``. Synthetic: tests only."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    group = rng.choice(3, n, p=shares)
    sm = np.full((n, 3, 3), 0.05)
    for i in range(n):
        y, w1, w2 = labels[i], (labels[i] + 1) % 3, (labels[i] + 2) % 3
        if group[i] == 0:
            sm[i, :, y] = 0.8
        elif group[i] == 1:
            sm[i, 0, w1], sm[i, 0, w2] = 0.5, 0.4
            sm[i, 1:, w2] = 0.7
            if last_right:
                sm[i, 2, w2], sm[i, 2, y] = 0.05, 0.8
        else:
            sm[i, 0, w1], sm[i, 0, y] = 0.45, 0.3
            sm[i, 1:, y] = 0.8
    sm /= sm.sum(axis=2, keepdims=True)
    split = np.where(np.arange(n) % 2 == 0, SPLITS.index("val"), SPLITS.index("test"))
    meta = {"model_id": f"synthetic-{name}", "dataset": "synthetic",
            "exit_names": ["e0", "e1", "e2"], "exit_positions": [0.33, 0.66, 1.0],
            "produced_by": {"command": f"{name}_trace()"}, "synthetic": True}
    return make_trace(labels, split, sm, meta), group


def test_the_gain_target_lets_hopeless_samples_go_at_once():
    trace, group = hopeless_trace()
    test = trace.indices("test")
    b = group[test] == 1
    fits = {t: build_policy({"name": "safe-exit", "tolerance_pct": 100, "target": t}, trace)
            for t in ("agreement", "gain")}
    exits = {t: p.exit_index(trace, test) for t, p in fits.items()}
    # Agreement: B's exit 0 disagrees with the last exit, so B runs on (to exit 1, where it
    # already agrees). Gain: continuing never fixes B, so B leaves at exit 0; A leaves there
    # too and C, which continuing fixes, goes on in both. The same accuracy, less cost.
    assert (exits["agreement"][b] > 0).mean() > 0.95
    assert (exits["gain"][b] == 0).mean() > 0.95
    acc = {t: float(trace.correct[test, e].mean()) for t, e in exits.items()}
    assert acc["gain"] == pytest.approx(acc["agreement"], abs=0.01)
    assert average_cost(exits["gain"], COSTS) < average_cost(exits["agreement"], COSTS) - 0.2
    assert fits["gain"].get_params()["target"] == "gain"


def test_next_gain_labels_say_whether_the_next_exit_fixes_it():
    from offramp.policies.safe_scorer import Target

    # Correctness at 3 exits: (right, right, right), (wrong, right, right), (wrong, wrong,
    # right), (wrong, wrong, wrong), (right, wrong, right).
    ok = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0], [1, 0, 1]], dtype=bool)
    trace = SimpleNamespace(correct=ok)
    ids = np.arange(5)
    assert Target.NEXT_GAIN.labels(trace, ids).tolist() == [
        [True, True], [False, True], [True, False], [True, True], [True, False]]
    assert Target.GAIN.labels(trace, ids).tolist() == [
        [True, True], [False, True], [False, False], [True, True], [True, False]]
    with pytest.raises(ValueError):
        Target.AUTO.labels(trace, ids)


def next_fix_trace(n: int = 3000, seed: int = 0):
    """3 exits, 3 classes. A (50%): right everywhere. B (25%): wrong at exits 0 and 1, right
    at the last; C (25%): wrong at exit 0, right from exit 1 on. Exit 0's softmax tells B
    (split between two wrong classes) from C (a wrong class, then the right one). Under a
    budget that lets a quarter of the samples go one exit further, sending C on is the best
    use of it; agreement and gain (with the last exit) cannot tell B from C. Synthetic: tests
    only."""
    return _three_groups(n, seed, "next_fix", [0.5, 0.25, 0.25], last_right=True)


def test_auto_keeps_the_target_most_accurate_on_val():
    trace, group = next_fix_trace()
    test = trace.indices("test")
    fits = {t: SafeExit(budget_ms=1.27, costs=COSTS, target=t).fit(trace)
            for t in ("agreement", "gain", "next-gain", "auto")}
    acc = {t: _score(p, trace, "test")[0] for t, p in fits.items()}
    # next-gain sends C one exit on and lets B go at once; the others spend the budget on both.
    assert acc["next-gain"] > max(acc["agreement"], acc["gain"]) + 0.08
    assert (fits["next-gain"].exit_index(trace, test)[group[test] == 2] == 1).mean() > 0.9
    auto = fits["auto"]
    assert auto.get_params()["chosen_target"] == "next-gain"
    assert auto.val_accuracy_ == max(p.val_accuracy_ for p in fits.values())
    assert auto.threshold_ == fits["next-gain"].threshold_
    assert acc["auto"] == acc["next-gain"]
    assert "the next exit would not fix it" in auto.explain()
    for p in fits.values():  # every one within its budget on val
        assert p.val_cost_ms_ <= 1.27 + 1e-12


def test_auto_under_a_tolerance_keeps_the_cheapest_and_fits_together_like_one_by_one():
    import pickle

    from offramp.policies.registry import build_policies

    trace, _ = next_fix_trace(1600, seed=2)
    # Under a tolerance auto keeps the cheapest target that holds it (here by the per-exit
    # costs given), an explicit target keeps its own.
    fits = {t: SafeExit(tolerance_pct=90.0, costs=COSTS, target=t).fit(trace)
            for t in ("agreement", "gain", "next-gain", "auto")}
    spend = {t: _score(p, trace, "val")[1] for t, p in fits.items() if t != "auto"}
    assert fits["auto"].get_params()["chosen_target"] == min(spend, key=spend.get)
    assert _score(fits["auto"], trace, "val")[1] == min(spend.values())
    # Explicit targets and auto fitted together share the scorers and give what each gives alone.
    cfgs = [{"name": "safe-exit", "tolerance_pct": 90.0, "target": t}
            for t in ("next-gain", "auto", "agreement")]
    together = list(build_policies(cfgs, trace))
    every = np.arange(trace.n_samples)
    for cfg, joint in zip(cfgs, together, strict=True):
        alone = build_policy(cfg, trace)
        assert joint.threshold_ == alone.threshold_
        assert np.array_equal(joint.exit_index(trace, every), alone.exit_index(trace, every))
    # A fitted policy sent to a process pool scores the same there.
    back = pickle.loads(pickle.dumps(together[1]))
    assert np.array_equal(back.exit_index(trace, every), together[1].exit_index(trace, every))
    assert back.__dict__["_score_cache"] is back.scorer_.cache
