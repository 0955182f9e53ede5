"""Max-prob and entropy policies and their threshold fitting, on traces solved by hand."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import scored_trace

from offramp.common.errors import InputError
from offramp.policies.confidence import Entropy, MaxProb
from offramp.policies.thresholds import from_fractions, from_tolerance
from offramp.traces.format import make_trace

# --- A 3-exit case for PAME's precision-aware rule, solved by hand (see the test). ---------
CONF0 = [0.99 - 0.01 * i for i in range(10)]
CONF1 = [0.6] * 7 + [0.7, 0.8, 0.9]
RIGHT0 = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
RIGHT1 = [1] * 7 + [0, 1, 0]
RIGHT_LAST = [1, 1, 1, 1, 0, 1, 1, 1, 0, 1]
ROWS_CONF = [[c0, c1, 0.99] for c0, c1 in zip(CONF0, CONF1, strict=True)]
ROWS_OK = [[bool(a), bool(b), bool(c)] for a, b, c in zip(RIGHT0, RIGHT1, RIGHT_LAST, strict=True)]
# The same ten samples as val and again as test.
TOL = scored_trace(ROWS_CONF * 2, ROWS_OK * 2, n_val=10)


def test_tolerance_conditional_target_solved_by_hand():
    # τ = 95: target T = 0.8 · 0.95 = 0.76 on the val split's mixed accuracy.
    # Exit 0, all 10 active, by confidence: taking the top t and the full model for the rest,
    # t = 7 gives (6 + 2) / 10 = 0.8 ≥ 0.76, t = 8 gives (6 + 1) / 10 = 0.7: take 7.
    # Conditional target: T' = (0.76 − 6/7 · 0.7) / 0.3 = 0.5333 over samples 7, 8, 9.
    # Exit 1, by confidence 9, 8, 7: t = 1 gives (0 + 1) / 3, t = 2 gives (1 + 1) / 3 = 0.667
    # ≥ 0.533, t = 3 gives 1 / 3: take 2 (samples 9 and 8). Against the unconditional 0.76,
    # t = 2 would fail and exit 1 would take nobody.
    conf = TOL.maxprob[:10].astype(float)
    t = from_tolerance(conf, TOL.correct[:10], 95.0)
    assert t.tolist() == [conf[6, 0], conf[8, 1]]
    pol = MaxProb(tolerance_pct=95).fit(TOL)
    val = np.arange(10)
    assert pol.exit_index(TOL, val).tolist() == [0] * 7 + [2, 1, 1]
    assert TOL.correct[val, pol.exit_index(TOL, val)].mean() == pytest.approx(0.8)
    # τ = 100 (T = 0.8): exit 0 takes t = 7 (0.8); T' = (0.8 − 0.6) / 0.3 = 0.667: exit 1 takes 2.
    assert MaxProb(tolerance_pct=100).fit(TOL).exit_index(TOL, val).tolist() == [0] * 7 + [2, 1, 1]
    # τ = 50 (T = 0.4): everybody exits at exit 0 (mixed 0.6 ≥ 0.4), exit 1 is never reached.
    t50 = from_tolerance(conf, TOL.correct[:10], 50.0)
    assert t50[0] == conf[9, 0] and np.isinf(t50[1])
    # Entropy orders two-class samples exactly as max-prob does: the same exits.
    ent = Entropy(tolerance_pct=95).fit(TOL)
    assert ent.exit_index(TOL, val).tolist() == [0] * 7 + [2, 1, 1]
    assert ent.thresholds_[0] == pytest.approx(float(TOL.entropy[6, 0]), abs=1e-7)


def test_tolerance_cuts_only_between_distinct_scores():
    # Four samples at one exit (plus the last); the top two tie. Full model: all right (T = 1).
    # Taking one sample alone would split the tie: not allowed; both are right -> take both.
    conf = np.array([[0.9, 1.0], [0.9, 1.0], [0.8, 1.0], [0.7, 1.0]])
    correct = np.array([[1, 1], [1, 1], [0, 1], [1, 1]], dtype=bool)
    assert from_tolerance(conf, correct, 100).tolist() == [0.9]
    # If one of the tied pair is wrong, the tie group cannot be taken at all.
    correct[1, 0] = False
    assert np.isinf(from_tolerance(conf, correct, 100)).all()
    # At τ = 75 (T = 0.75) the tied pair may go (mixed = (1 + 0 + 1 + 1) / 4), the third may not.
    assert from_tolerance(conf, correct, 75).tolist() == [0.9]
    with pytest.raises(InputError, match="tolerance_pct"):
        from_tolerance(conf, correct, 0)
    with pytest.raises(InputError, match="tolerance_pct"):
        from_tolerance(conf, correct, 100.5)
    assert np.isfinite(from_tolerance(conf, correct, 100.0)).sum() == 0


def test_fractions_take_the_most_confident_still_active_and_ties_all_exit():
    # 8 samples, fractions (0.5, 0.25, 0.25): exit 0 takes floor(4) of all, exit 1 floor(2)
    # of those still active, by exit 1's own confidence.
    conf = np.array([[0.9, 0.99], [0.8, 0.99], [0.7, 0.99], [0.6, 0.99], [0.6, 0.99],
                     [0.5, 0.55], [0.4, 0.95], [0.3, 0.75]])
    conf = np.c_[conf, np.ones(8)]
    t = from_fractions(conf, [0.5, 0.25, 0.25])
    # The 4th most confident (0.6) ties with the 5th: both exit, so 5 leave at exit 0. Among
    # samples 5, 6, 7 exit 1 takes its top two (0.95, 0.75) -- not the exited samples' 0.99.
    assert t.tolist() == [0.6, 0.75]
    assert from_fractions(conf, [0.0, 0.5, 0.5]).tolist() == [np.inf, 0.99]
    # A fraction too small to take one sample leaves the exit off.
    assert np.isinf(from_fractions(conf, [0.1, 0.0, 0.9])).all()
    assert from_fractions(conf, [0.125, 0.125, 0.75]).tolist() == [0.9, 0.99]
    for bad in ([0.5, 0.5], [0.6, 0.6, -0.2], [0.5, 0.25, 0.2]):
        with pytest.raises(InputError, match="fractions"):
            from_fractions(conf, bad)


def test_fractions_through_the_policy():
    rows = [[0.9, 0.99], [0.8, 0.99], [0.7, 0.6], [0.6, 0.9]]
    tr = scored_trace(rows * 2, [[True, True]] * 8, n_val=4)
    pol = MaxProb(fractions=[0.5, 0.5]).fit(tr)
    assert pol.exit_index(tr, np.arange(4, 8)).tolist() == [0, 0, 1, 1]
    assert pol.thresholds_.tolist() == pytest.approx([0.8])


def three_class_trace() -> tuple:
    """Two samples with the same max probability at exit 0 but different entropy."""
    softmax = np.array([[[0.6, 0.4, 0.0], [1.0, 0.0, 0.0]],
                        [[0.6, 0.2, 0.2], [1.0, 0.0, 0.0]]])
    meta = {"model_id": "three", "dataset": "synthetic", "exit_names": ["a", "b"],
            "exit_positions": [1, 2], "produced_by": {"command": "tests"}, "synthetic": True}
    tr = make_trace(np.zeros(2, dtype=int), np.ones(2, dtype=np.uint8), softmax, meta)
    return tr, np.arange(2)


def test_entropy_exits_on_low_entropy_and_max_prob_on_high_probability():
    tr, ids = three_class_trace()
    h_a, h_b = float(tr.entropy[0, 0]), float(tr.entropy[1, 0])
    # H(0.6, 0.4, 0) / log 3 = 0.6126; H(0.6, 0.2, 0.2) / log 3 = 0.8650.
    assert h_a == pytest.approx(0.6126, abs=1e-4) and h_b == pytest.approx(0.8650, abs=1e-4)
    assert Entropy(thresholds=[0.7]).fit(tr).exit_index(tr, ids).tolist() == [0, 1]
    assert Entropy(thresholds=[0.9]).fit(tr).exit_index(tr, ids).tolist() == [0, 0]
    assert Entropy(thresholds=[0.5]).fit(tr).exit_index(tr, ids).tolist() == [1, 1]
    # Ties exit: a threshold equal to a sample's entropy lets it go.
    assert Entropy(thresholds=[h_a]).fit(tr).exit_index(tr, ids).tolist() == [0, 1]
    assert Entropy(thresholds=[0.7]).fit(tr).thresholds_.tolist() == pytest.approx([0.7])
    # Max-prob sees the two as equal: both exit at 0.6 (ties exit), neither just above it.
    p = float(tr.maxprob[0, 0])
    assert MaxProb(thresholds=[p]).fit(tr).exit_index(tr, ids).tolist() == [0, 0]
    assert MaxProb(thresholds=[p + 1e-6]).fit(tr).exit_index(tr, ids).tolist() == [1, 1]
    # decide() at exit 0 and at the last exit.
    pol = Entropy(thresholds=[0.7]).fit(tr)
    assert pol.decide(tr, 0, ids).tolist() == [True, False]
    assert pol.decide(tr, 1, ids).tolist() == [True, True]


def test_thresholds_path_checks_its_length_and_one_way_only():
    tr, _ = three_class_trace()
    with pytest.raises(InputError, match="need 1 thresholds"):
        Entropy(thresholds=[0.5, 0.6]).fit(tr)
    with pytest.raises(InputError, match="exactly one"):
        MaxProb().fit(tr)
    with pytest.raises(InputError, match="exactly one"):
        Entropy(thresholds=[0.5], tolerance_pct=99).fit(tr)
    assert Entropy(thresholds=[0.25]).fit(tr).get_params() == {"name": "entropy",
                                                               "thresholds": [0.25]}
    assert MaxProb(tolerance_pct=99).get_params() == {"name": "maxprob", "tolerance_pct": 99}
