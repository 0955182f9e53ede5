"""`offramp fit` and `offramp frontier` end to end on a synthetic trace and profile (tests only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import knapsack_bound

from offramp.analysis.cli import main
from offramp.policies.table import load_policy
from offramp.traces.format import load_trace

DATA = Path(__file__).parent / "data"
TRACE, PROFILE = str(DATA / "synthetic-trace.npz"), str(DATA / "synthetic-profile.json")


def test_fit_saves_a_policy_that_simulate_loads(tmp_path, capsys):
    out = tmp_path / "pame.json"
    assert main(["fit", "--trace", TRACE, "--profile", PROFILE, "--policy", "pame",
                 "--tolerance", "99", "-o", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["report"]["val"]["relative_accuracy"] >= 0.99 - 1e-9
    assert abs(sum(doc["report"]["test"]["exit_fractions"]) - 1) < 1e-9
    table = load_policy(out)
    trace = load_trace(TRACE)
    assert table.exits.size == trace.n_samples
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "trace": {"path": TRACE}, "profile": {"path": PROFILE},
        "policy": {"from_file": "pame.json"}, "run": {"requests": 2000, "replications": 1}}))
    assert main(["simulate", str(study), "-o", str(tmp_path / "run"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    fractions = [summary["metrics"][f"exit_fraction_{k}"]["mean"] for k in range(trace.n_exits)]
    # Simulated requests are test samples, so the exit mix follows the fitted test fractions.
    assert np.allclose(fractions, doc["report"]["test"]["exit_fractions"], atol=0.05)


def _costs_ms(tmp_path, capsys) -> list[float]:
    """The per-exit costs (batch 1) `offramp fit` reports for the synthetic profile."""
    assert main(["fit", "--trace", TRACE, "--profile", PROFILE, "--policy", "static:0",
                 "-o", str(tmp_path / "s.json"), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["report"]["costs_ms"]


def test_fit_rejects_missing_constraint(tmp_path, capsys):
    costs = _costs_ms(tmp_path, capsys)
    assert main(["fit", "--trace", TRACE, "--profile", PROFILE, "--policy", "eenet",
                 "-o", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # The fix gives the budgets that mean something on this profile: first exit .. full model.
    assert err == ["offramp: error: offramp fit: field '--budget-ms': eenet needs budget_ms "
                   f"(fix: give --budget-ms between {costs[0]:.4g} ms (everything at the first "
                   f"exit) and {costs[-1]:.4g} ms (the full model) per sample)"]
    assert not (tmp_path / "p.json").exists()


def test_fit_warns_of_a_budget_above_the_full_model(tmp_path, capsys):
    """A budget above the full model's cost binds nothing: one warning line, and the fit runs."""
    costs = _costs_ms(tmp_path, capsys)
    quick = ["--param", "n_fits=1", "--param", "epochs=2"]
    for budget, warned in ((50.0, True), (costs[-1], False), (0.5 * (costs[0] + costs[-1]), False)):
        assert main(["fit", "--trace", TRACE, "--profile", PROFILE, "--policy", "eenet",
                     "--budget-ms", str(budget), *quick, "-o", str(tmp_path / "e.json")]) == 0
        err = capsys.readouterr().err.strip().splitlines()
        if not warned:
            assert err == [], err
            continue
        assert len(err) == 1 and err[0].startswith("offramp fit: warning: --budget-ms 50 is "
                                                   "above the full model's cost"), err
        assert f"{costs[-1]:.4g} ms" in err[0] and "no more than the full model" in err[0]


def test_frontier_reports_the_oracle_bound_and_mixes(tmp_path, capsys):
    assert main(["frontier", "--trace", TRACE, "--profile", PROFILE, "--eenet-fits", "1",
                 "--eenet-epochs", "20", "-o", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    families = {p["family"] for p in doc["points"]}
    assert {"static", "eenet", "pame", "gati", "patience", "maxprob (τ)", "safe-exit"} <= families
    trace, costs = load_trace(TRACE), np.array(doc["attrs"]["costs_ms"])
    test = trace.indices("test")
    # The bound the frontier reports is the LP optimum, computed here by a greedy knapsack.
    for row in doc["oracle_bound"]:
        want = knapsack_bound(trace.correct[test], costs, row["budget_ms"])
        assert row["oracle_bound"] == pytest.approx(want, abs=1e-6), row
    assert len(doc["budgets"]) == 5
    # The heuristic is chosen on val; every CI holds its point estimate.
    for row in doc["budgets"]:
        heur = [p for p in doc["points"] if p["budget_ms"] == row["budget_ms"]
                and p["family"].endswith("(exp fractions)")]
        assert row["best_heuristic"] == max(heur, key=lambda p: p["val_accuracy"])["policy"]
        for who in ("heuristic", "eenet", "safe-exit"):
            assert row[f"{who}_vs_maxprob_lo"] <= row[f"{who}_vs_maxprob"] <= row[f"{who}_vs_maxprob_hi"]
        assert row["agreement_oracle"] <= row["oracle_bound"] + 1e-9
    # Mixing real policies never beats the oracle, and never falls below a point it could mix.
    for row in doc["oracle_bound"]:
        if row["best_mix"] is not None:
            assert row["best_mix"] <= row["oracle_bound"] + 1e-6
            under = [p["test_accuracy"] for p in doc["points"]
                     if p["family"] != "oracle" and p["test_cost_ms"] <= row["budget_ms"]]
            assert row["best_mix"] >= max(under) - 1e-6
    assert (tmp_path / "synthetic-trace-frontier.png").stat().st_size > 10_000


def test_a_pame_fit_says_why_and_writes_strict_json(tmp_path, capsys):
    out = tmp_path / "pame.json"
    assert main(["fit", "--trace", "rt-minilm6", "--profile", "rt-minilm6-cpu", "--policy",
                 "pame", "--tolerance", "99", "--max-batch", "4", "--exit-mode", "keep",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "why: placed exits" in printed

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    doc = json.loads(out.read_text(), parse_constant=refuse)  # no Infinity / NaN
    assert "inf" in doc["report"]["policy_report"]["thresholds"]  # exits not placed
    assert doc["report"]["why"].startswith("placed exits")


def test_frontier_served_prices_each_budgeted_policy_in_capacity(tmp_path, capsys):
    import yaml

    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "trace": {"path": "ignored.npz"}, "profile": {"path": "ignored.json"},
        "workload": {"kind": "poisson", "rate_rps": 100.0},
        "server": {"max_batch": 8, "max_wait_ms": 1.0, "exit_mode": "shrink"},
        "run": {"requests": 600, "replications": 1, "seed": 0}}))
    assert main(["frontier", "--trace", TRACE, "--profile", PROFILE, "--eenet-fits", "1",
                 "--eenet-epochs", "5", "--served", str(study), "--slo-p99-ms", "40",
                 "-o", str(tmp_path / "f"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["budgets"]
    caps = [r["maxprob_capacity_rps"] for r in sorted(rows, key=lambda r: r["budget_ms"])]
    assert all(c > 0 for c in caps)
    # A lower budget exits earlier: less work per request, more of them within the SLO.
    assert caps[0] > caps[-1]
    for r in rows:
        for who in ("heuristic", "eenet", "safe-exit"):
            assert r[f"{who}_capacity_rps"] > 0 and r[f"{who}_capacity_pm_rps"] >= 0
    assert main(["frontier", "--trace", TRACE, "--profile", PROFILE, "--slo-p99-ms", "40",
                 "-o", str(tmp_path / "g")]) == 2
    assert "--served" in capsys.readouterr().err
