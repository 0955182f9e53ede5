"""EENet: learns a score where max probability is useless, and meets its budget."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from offramp.common.errors import InputError
from offramp.policies.budget import exits_for, exp_fractions, within_budget
from offramp.policies.confidence import MaxProb
from offramp.policies.costs import evaluate, exit_costs
from offramp.policies.eenet import EENet
from offramp.profiling.synthetic import synthetic_profile
from offramp.traces.format import make_trace
from offramp.traces.synthetic import synthetic_trace


def half_easy_trace(n: int = 800, seed: int = 0):
    """Half the samples are right at exit 0 and at the end, half only at the end; the max
    probability has the same distribution either way, only the softmax vector tells them apart."""
    rng = np.random.default_rng(seed)
    ok = np.zeros((n, 3), dtype=bool)
    ok[: n // 2, 0] = True
    ok[:, 2] = True
    ok = ok[rng.permutation(n)]
    p0 = np.where(ok, rng.uniform(0.6, 0.99, ok.shape), rng.uniform(0.01, 0.4, ok.shape))
    meta = {"model_id": "crafted", "dataset": "synthetic", "exit_names": ["a", "b", "c"],
            "exit_positions": [1, 2, 3], "produced_by": {"command": "tests"}, "synthetic": True}
    split = (np.arange(n) >= n // 2).astype(np.uint8)
    return make_trace(np.zeros(n, dtype=int), split, np.stack([p0, 1 - p0], axis=2), meta)


def test_eenet_learns_the_right_exits_where_max_prob_cannot():
    tr = half_easy_trace()
    c = [1.0, 2.0, 3.0]
    # The best policy at 2 ms: easy samples at exit 0, the rest at the end, accuracy 1.
    baseline, _ = evaluate(MaxProb(fractions=exp_fractions(c, 2.0)).fit(tr), tr, c, "test")
    threads = torch.get_num_threads()
    # The CPU-tuned optimiser (lr 1e-2, AdamW): at the paper's lr 3e-5 a 400-sample val set
    # (one batch per epoch) moves the score heads too little in 1,000 steps to learn this. And
    # the paper's wider assignment heads (× 2, its BERT setting): × 0.5 of 4 inputs is 2 units.
    pol = EENet(2.0, c, n_fits=2, epochs=1000, lr=1e-2, decoupled_weight_decay=True,
                hidden_scale=2.0).fit(tr)
    assert torch.get_num_threads() == threads
    acc, cost = evaluate(pol, tr, c, "test")
    assert baseline < 0.6
    assert acc >= 0.9 and cost == pytest.approx(2.0, rel=0.1)
    assert abs(pol.val_cost_ms_ - 2.0) <= 0.2
    json.dumps(pol.get_params())
    again = pickle.loads(pickle.dumps(pol))
    assert np.array_equal(again.exit_index(tr, np.arange(tr.n_samples)),
                          pol.exit_index(tr, np.arange(tr.n_samples)))


@pytest.mark.parametrize("budget", [1.8, 2.5, 3.2])
@pytest.mark.parametrize("tuned", [False, True])
def test_eenet_never_spends_above_its_budget_on_val(budget, tuned):
    tr = synthetic_trace(4000)
    c = exit_costs(synthetic_profile())
    kw = {"lr": 1e-2, "decoupled_weight_decay": True, "epochs": 150} if tuned else {"epochs": 60}
    pol = EENet(budget, c, n_fits=2, **kw).fit(tr)
    acc, cost = evaluate(pol, tr, c, "val")
    assert cost <= budget + 1e-9
    assert cost == pytest.approx(pol.val_cost_ms_)
    assert np.isclose(pol.fractions_.sum(), 1) and len(pol.fits_) == 2
    assert all(f["cost"] <= budget + 1e-9 for f in pol.fits_)
    # The fit kept is the most accurate one.
    assert pol.val_accuracy_ == max(f["accuracy"] for f in pol.fits_)
    assert pol.explain().startswith(f"budget {budget:.4g} ms per sample, of the {c[0]:.4g}-")
    if tuned:  # not worse than the exp heuristic by more than noise (both fitted on val)
        exp_acc, _ = evaluate(MaxProb(fractions=exp_fractions(c, budget)).fit(tr), tr, c, "val")
        assert acc >= exp_acc - 0.03


def test_thresholds_lowered_into_the_budget_by_the_least_common_amount():
    scores = np.array([[0.9, 0.5, 1.0], [0.6, 0.8, 1.0], [0.3, 0.2, 1.0], [0.1, 0.7, 1.0]])
    costs = np.array([1.0, 2.0, 3.0])
    # As given, exit 0 takes sample 0, exit 1 sample 1: cost (1 + 2 + 3 + 3) / 4 = 2.25.
    t, delta = within_budget(scores, np.array([0.85, 0.75]), costs, 2.25)
    assert delta == 0 and list(t) == [0.85, 0.75]
    # Within 2.0: sample 3 must leave at exit 1 (score 0.7): δ just over 0.05.
    t, delta = within_budget(scores, np.array([0.85, 0.75]), costs, 2.0)
    assert list(exits_for(scores, t)) == [0, 1, 2, 1] and 0.0499 < delta < 0.0501
    # An exit the fractions closed (inf) stays closed; only the first can rescue a tiny budget.
    t, delta = within_budget(scores, np.array([np.inf, 0.75]), costs, 1.0)
    assert list(exits_for(scores, t)) == [0, 0, 0, 0] and delta == float("inf")
    # ... and only as far as the budget needs: at 1.5 ms the two surest leave at exit 0.
    t, delta = within_budget(scores, np.array([np.inf, 0.75]), costs, 1.5)
    assert list(exits_for(scores, t)) == [0, 0, 1, 1] and delta == float("inf")


def test_eenet_rejects_impossible_budget_and_missing_softmax():
    tr = synthetic_trace(200)
    with pytest.raises(InputError, match="below the first exit") as err:
        EENet(0.1, [1.0, 2.0, 3.0, 4.0]).fit(tr)
    assert "between 1 ms" in err.value.fix and "and 4 ms (the full model)" in err.value.fix
    with pytest.raises(InputError, match="costs"):
        EENet(2.0, [1.0, 2.0]).fit(tr)
    bare = make_trace(tr.labels, tr.split, tr.softmax, tr.meta, keep_softmax=False)
    with pytest.raises(InputError, match="softmax"):
        EENet(2.0, [1.0, 2.0, 3.0, 4.0], epochs=1).fit(bare)


def test_eenet_seeds_fit_in_worker_processes_give_the_same_policy(monkeypatch):
    # The seeds are spread over a process pool (common/pool.py); each fit is single-threaded
    # and seeded, so the pool changes where they run, not what they give.
    tr = synthetic_trace(1200, seed=4)
    costs = exit_costs(synthetic_profile())
    kw = {"budget_ms": float(costs[1]), "costs": costs, "n_fits": 2, "epochs": 8}
    from offramp.common import pool

    alone = EENet(**kw).fit(tr)  # the library's default: no pool, every seed here
    monkeypatch.setattr(pool, "_ENABLED", True)  # as the CLI does
    monkeypatch.setenv("OFFRAMP_WORKERS", "2")
    if not pool.usable():
        pytest.skip("one core: no pool to compare with")
    used = []
    real = pool._pool
    monkeypatch.setattr(pool, "_pool", lambda: used.append(1) or real())
    pooled = EENet(**kw).fit(tr)
    assert used  # the seeds went to worker processes
    assert alone.fits_ == pooled.fits_
    assert np.array_equal(alone.thresholds_, pooled.thresholds_)
    ids = tr.indices("test")
    assert np.array_equal(alone.exit_index(tr, ids), pooled.exit_index(tr, ids))


@pytest.mark.parametrize("patience", [100, 3])
def test_seeds_trained_side_by_side_are_the_fits_each_seed_gives_alone(monkeypatch, patience):
    # The fits of a group share no parameter: stacked, each one follows its own seed's path
    # (initialisation, batch order, kept epoch and, with a short patience, its own stop while
    # the others train on), to float rounding.
    from offramp.common import pool
    from offramp.policies import eenet_train

    # Here, not in pool workers (they would not see the patched patience): an earlier CLI
    # test may have turned the pool on for this process.
    monkeypatch.setattr(pool, "_ENABLED", False)
    monkeypatch.setattr(eenet_train, "PATIENCE", patience)
    tr = synthetic_trace(1500, seed=6)
    costs = exit_costs(synthetic_profile())
    kw = {"budget_ms": float(costs[1]), "costs": costs, "n_fits": 4, "epochs": 40,
          "lr": 0.01, "decoupled_weight_decay": True}
    monkeypatch.setattr(eenet_train, "FIT_GROUPS", 1)
    together = EENet(**kw).fit(tr)
    monkeypatch.setattr(eenet_train, "FIT_GROUPS", 4)
    alone = EENet(**kw).fit(tr)
    stops = {f["epochs"] for f in alone.fits_}
    if patience == 3:
        assert len(stops) > 1 and min(stops) < 40  # fits stopped at different epochs
    for a, b in zip(together.fits_, alone.fits_, strict=True):
        assert (a["epochs"], a["kept_epoch"]) == (b["epochs"], b["kept_epoch"])
        assert a["cost"] == pytest.approx(b["cost"], abs=1e-4)
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=2e-3)
    assert np.allclose(together.scores(tr), alone.scores(tr), atol=1e-4)


def test_the_pool_is_never_used_where_it_is_not_safe(monkeypatch):
    # Off unless enabled (a library caller, a notebook, a script without a main guard); never
    # in a child process (a sweep's or optimizer's worker: no pools within pools) nor in a fork
    # of the process that made it.
    from offramp.common import pool

    monkeypatch.setenv("OFFRAMP_WORKERS", "2")
    monkeypatch.setattr(pool, "_ENABLED", False)
    assert not pool.usable()
    monkeypatch.setattr(pool, "_ENABLED", True)
    monkeypatch.setattr(pool, "_OWNER", -1)  # made by another process (this one is its fork)
    assert not pool.usable()
    monkeypatch.setattr(pool, "_OWNER", None)
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())  # a child
    assert not pool.usable()
    assert pool.map_independent(pow, [(2, 3), (3, 2)]) == [8, 9]  # runs here, in order


@pytest.mark.parametrize("model_id,scale", [("rt-minilm6", 2.0), ("fmnist-resnet", 0.5),
                                            ("crafted", 0.5)])
def test_the_assignment_heads_width_is_the_papers_for_the_models_family(model_id, scale):
    """Unset, hidden_scale is the paper's for the trace's model: 2 for a transformer (its BERT
    setting), 0.5 otherwise; the fitted policy says which it used."""
    tr = half_easy_trace()
    tr.meta["model_id"] = model_id
    pol = EENet(2.0, [1.0, 2.0, 3.0], n_fits=1, epochs=2).fit(tr)
    width = pol.net_["assign"][0][0].in_features
    assert pol.net_["assign"][0][0].out_features == max(2, int(width * scale))
    assert pol.get_params()["hidden_scale"] == scale
    # a given width is used as given
    given = EENet(2.0, [1.0, 2.0, 3.0], n_fits=1, epochs=2, hidden_scale=1.0).fit(tr)
    assert given.net_["assign"][0][0].out_features == max(2, int(width * 1.0))


def test_every_budget_trained_side_by_side_gives_each_budgets_own_fits(monkeypatch):
    # A frontier fits EENet at several budgets at once (every budget's seeds in one group,
    # each fit with its own budget; fits dropped from the group as they stop): the same fits
    # as one budget at a time, to float rounding.
    from offramp.common import pool
    from offramp.policies import eenet_train
    from offramp.policies.registry import build_policies, build_policy
    from offramp.profiling.latency import LatencyModel

    monkeypatch.setattr(pool, "_ENABLED", False)
    monkeypatch.setattr(eenet_train, "PATIENCE", 3)
    monkeypatch.setattr(eenet_train, "FIT_GROUPS", 1)
    tr = synthetic_trace(1500, seed=6)
    latency = LatencyModel(synthetic_profile())
    costs = exit_costs(latency)
    cfgs = [{"name": "eenet", "budget_ms": float(b), "n_fits": 3, "epochs": 40, "lr": 0.01,
             "decoupled_weight_decay": True} for b in (costs[1], (costs[1] + costs[2]) / 2)]
    together = list(build_policies([*cfgs, {"name": "maxprob", "tolerance_pct": 99}], tr,
                                   latency))
    assert together[-1].name == "maxprob"
    stops = set()
    for cfg, joint in zip(cfgs, together, strict=False):
        alone = build_policy(cfg, tr, latency)
        assert joint.budget_ms == cfg["budget_ms"]
        for a, b in zip(joint.fits_, alone.fits_, strict=True):
            assert (a["epochs"], a["kept_epoch"]) == (b["epochs"], b["kept_epoch"])
            assert a["cost"] == pytest.approx(b["cost"], abs=1e-4)
            assert a["cost"] <= cfg["budget_ms"] + 1e-9  # each fit calibrated to its own budget
            stops.add(a["epochs"])
        assert np.allclose(joint.scores(tr), alone.scores(tr), atol=1e-4)
    assert len(stops) > 1 and min(stops) < 40  # fits left the group at different epochs
