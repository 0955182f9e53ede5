"""``offramp optimize`` on synthetic traces and profiles (tests only, labelled synthetic) where
the optimum is known by construction, resumed after a kill, on two executors, and from the
command line with bad input."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from helpers import needs_fmnist

from offramp.analysis.cli import main
from offramp.analysis.optimize.goal import Goal, Objective
from offramp.analysis.optimize.run import optimize
from offramp.analysis.optimize.search import Settings
from offramp.analysis.study.config import load_config
from offramp.profiling.format import save_profile
from offramp.profiling.synthetic import synthetic_profile
from offramp.traces.format import SPLITS, make_trace, save_trace

FAST = Settings(trials=8, batch=4, startup=4, screen_requests=2000, screen_replications=2,
                finalists=1, seeds=2)


def _easy_trace(n: int = 2000, k: int = 4, c: int = 10):
    """Synthetic: every exit answers right, exit 0 with probability 0.99 — exiting at 0 loses
    nothing, so the best policy sends (almost) everything out there."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, c, n)
    soft = np.full((n, k, c), 0.01 / (c - 1))
    soft[np.arange(n), :, labels] = 0.99
    split = np.where(rng.random(n) < 0.5, SPLITS.index("val"), SPLITS.index("test"))
    meta = {"model_id": "synthetic-net", "dataset": "synthetic",
            "exit_names": [f"exit{i}" for i in range(k)],
            "exit_positions": [float(i + 1) / k for i in range(k)],
            "produced_by": {"command": "tests/test_optimize.py"}, "synthetic": True}
    return make_trace(labels, split, soft, meta)


def _study(tmp_path, trace, **sections) -> str:
    save_trace(trace, tmp_path / "t.npz")
    save_profile(synthetic_profile(segment_ms=1.0), tmp_path / "p.json")
    doc = {"trace": {"path": "t.npz"}, "profile": {"path": "p.json"},
           "workload": {"kind": "poisson", "rate_rps": 300.0},
           "server": {"max_batch": 16, "max_wait_ms": 1.0, "exit_mode": "shrink"},
           "policy": {"name": "maxprob", "tolerance_pct": 99},
           "run": {"requests": 3000, "replications": 2, "seed": 0}, **sections}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_finds_the_exit_that_is_always_right_and_cheap(tmp_path):
    study = _study(tmp_path, _easy_trace())
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"policies": ["none", "maxprob"], "exit_modes": ["shrink"],
                                     "max_batch": [16], "max_wait_ms": {"low": 0.5, "high": 2}}))
    goal = Goal(Objective.LOAD, 30.0, min_relative_accuracy=0.99)
    with ThreadPoolExecutor(1) as ex:
        res = optimize(study, goal, tmp_path / "out", ex, FAST, space, baselines=True)
    win, none = res.winner, res.baselines["no exits (best batching)"]
    assert win.point["policy.name"] == "maxprob" and win.exit_fractions[0] > 0.95
    assert win.test_relative_accuracy == pytest.approx(1.0)
    # Exiting after the first of four equal segments serves well over twice the load.
    assert win.value > 2.0 * none.value > 0
    assert res.spent["search"] > 0 and len(res.trials) >= FAST.trials


def test_finds_the_only_batching_that_meets_the_slo(tmp_path):
    # At 1000 req/s one request per batch cannot keep up (~4.3 ms each), and with a 40 ms
    # wait a 64-batch waits ~64 ms to fill: only max_batch 8 holds p99 <= 25 ms.
    study = _study(tmp_path, _easy_trace())
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"policies": ["none"], "max_batch": [1, 8, 64],
                                     "max_wait_ms": {"low": 40, "high": 50}}))
    goal = Goal(Objective.ACCURACY, 25.0, load_rps=1000.0)
    with ThreadPoolExecutor(1) as ex:
        res = optimize(study, goal, tmp_path / "out", ex, FAST, space, baselines=False)
    assert res.winner.point["server.max_batch"] == 8
    held = {o.point["server.max_batch"] for o in res.trials if o.feasible}
    assert held == {8}


def _kill_after(n: int):
    def progress(what: str, done: int, total: int) -> None:
        if what == "search" and done >= n:
            raise KeyboardInterrupt

    return progress


def test_a_killed_search_resumes_where_it_stopped(tmp_path):
    study = _study(tmp_path, _easy_trace())
    goal = Goal(Objective.LOAD, 30.0, min_relative_accuracy=0.99)
    with ThreadPoolExecutor(1) as ex:
        whole = optimize(study, goal, tmp_path / "whole", ex, FAST, baselines=False)
        with pytest.raises(KeyboardInterrupt):
            optimize(study, goal, tmp_path / "cut", ex, FAST, baselines=False,
                     progress=_kill_after(1))
        import optuna

        kept = optuna.load_study(study_name="offramp-optimize",
                                 storage=f"sqlite:///{tmp_path / 'cut' / 'optuna.db'}")
        assert 0 < len(kept.trials) < len(whole.trials)
        resumed = optimize(study, goal, tmp_path / "cut", ex, FAST, baselines=False)
    assert [o.point for o in resumed.trials] == [o.point for o in whole.trials]
    assert resumed.winner.point == whole.winner.point
    assert resumed.winner.value == whole.winner.value


def test_same_result_on_a_process_pool(tmp_path):
    study = _study(tmp_path, _easy_trace())
    goal = Goal(Objective.LOAD, 30.0, min_relative_accuracy=0.99)
    with ThreadPoolExecutor(1) as ex:
        one = optimize(study, goal, tmp_path / "a", ex, FAST, baselines=False)
    with ProcessPoolExecutor(2) as ex:
        two = optimize(study, goal, tmp_path / "b", ex, FAST, baselines=False)
    assert [o.as_dict() | {"seconds": 0} for o in one.trials] == \
        [o.as_dict() | {"seconds": 0} for o in two.trials]
    assert one.winner.value == two.winner.value


def test_same_result_on_a_dask_cluster(tmp_path):
    """The search's trials on a Dask cluster reached by its address (as ``--scheduler`` does)
    are those of one local thread, in the same order."""
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    from offramp.analysis.cli.options import executor_for

    study = _study(tmp_path, _easy_trace())
    goal = Goal(Objective.LOAD, 30.0, min_relative_accuracy=0.99)
    with ThreadPoolExecutor(1) as ex:
        one = optimize(study, goal, tmp_path / "a", ex, FAST, baselines=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, executor_for(SimpleNamespace(
                          workers=None, dask_local=None,
                          scheduler=cluster.scheduler_address)) as (ex, where):
        assert where.startswith("Dask cluster tcp://")
        two = optimize(study, goal, tmp_path / "b", ex, FAST, baselines=False)
    assert [o.as_dict() | {"seconds": 0} for o in one.trials] == \
        [o.as_dict() | {"seconds": 0} for o in two.trials]
    assert one.winner.value == two.winner.value


def test_cli_writes_a_study_that_simulates(tmp_path, capsys):
    study = _study(tmp_path, _easy_trace())
    out = tmp_path / "out"
    assert main(["optimize", study, "--slo-p99-ms", "30", "--min-relative-accuracy", "0.99",
                 "-o", str(out), "--trials", "6", "--finalists", "1", "--seeds", "2",
                 "--screen-requests", "2000", "--no-baselines", "--workers", "1",
                 "--quiet", "--cost-per-replica-hour", "2"]) == 0
    text = capsys.readouterr().out
    assert "optimizer's choice" in text and "wrote" in text
    doc = json.loads((out / "optimize.json").read_text())
    assert doc["winner"]["feasible"] and doc["why"]
    # Priced: the winner's cost per million requests, in the table, the JSON and the page.
    win = doc["table"][0]
    assert win["cost_per_million"] == pytest.approx(
        2 * win["replicas"] / (doc["winner"]["detail"]["rate_rps"] * 3600) * 1e6)
    assert f"{win['cost_per_million']:.4g}" in text
    assert "cost per million requests" in (out / "report.html").read_text()
    best = load_config(out / "best.yaml")
    assert best.policy.name == doc["winner"]["point"]["policy.name"]
    assert best.slo.latency_ms == 30.0
    assert main(["simulate", str(out / "best.yaml"), "--set", "run.requests=2000",
                 "-o", str(tmp_path / "run")]) == 0
    assert main(["report", str(out)]) == 0
    assert "offramp optimize" in (out / "report.html").read_text()


@pytest.mark.parametrize("args, field", [
    (["--minimize", "replicas"], "--load-rps"),
    (["--maximize", "load", "--load-rps", "100"], "--load-rps"),
    (["--space", "SPACE"], "policies"),
    (["--budget-ms", "0.0001"], "below the cheapest exit"),  # no candidate could meet it
])
def test_cli_bad_goals_and_spaces_are_one_clear_error(tmp_path, capsys, args, field):
    study = _study(tmp_path, _easy_trace())
    (tmp_path / "space.yaml").write_text("policies: [static]\n")
    args = [str(tmp_path / "space.yaml") if a == "SPACE" else a for a in args]
    assert main(["optimize", study, "--slo-p99-ms", "30", "-o", str(tmp_path / "o"),
                 *args]) != 0
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err


def test_the_real_capacity_is_where_attainment_crosses_the_target():
    from offramp.analysis.validation.real_capacity import crossing

    # Held at 100 and 110 (0.995, 0.991), failed at 120 (0.981): 110 + 10 * 0.001 / 0.010.
    assert crossing({100.0: 0.995, 110.0: 0.991, 120.0: 0.981}, 0.99) == \
        pytest.approx((111.0, ""))
    assert crossing({100.0: 0.999, 120.0: 0.995}, 0.99) == (120.0, ">=")
    assert crossing({100.0: 0.95, 120.0: 0.90}, 0.99) == (100.0, "<")
    # A dip below and back: the last rate that held, then the first failure above it.
    assert crossing({100.0: 0.98, 110.0: 0.995, 120.0: 0.97}, 0.99) == \
        pytest.approx((110.0 + 10.0 * 0.005 / 0.025, ""))


def test_validate_needs_the_load_objective(tmp_path, capsys):
    study = _study(tmp_path, _easy_trace())
    assert main(["optimize", study, "--slo-p99-ms", "30", "--maximize", "accuracy",
                 "--load-rps", "100", "--validate", "-o", str(tmp_path / "o")]) != 0
    assert "--validate" in capsys.readouterr().err
    # The real model's weights: checked before the search, and only with --validate.
    for extra, words in ((["--validate", "--checkpoint", str(tmp_path / "no.pt")],
                          "no such file"),
                         (["--checkpoint", str(tmp_path / "no.pt")], "for --validate")):
        assert main(["optimize", study, "--slo-p99-ms", "30", *extra,
                     "-o", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--checkpoint" in err[0] and words in err[0]
        assert not (tmp_path / "o").exists()


@needs_fmnist
def test_validate_measures_the_winner_and_no_exits_on_the_real_loop(tmp_path, capsys):
    from offramp.profiling.job import default_checkpoint

    out = tmp_path / "opt"
    study = Path(__file__).resolve().parent.parent / "examples" / "capacity-fmnist.yaml"
    weights = default_checkpoint("fmnist-resnet")
    assert main(["optimize", str(study), "--slo-p99-ms", "25",
                 "--min-relative-accuracy", "0.99", "--trials", "4", "--finalists", "1",
                 "--seeds", "1", "--screen-requests", "1000", "-o", str(out), "--workers", "1",
                 "--baselines", "none", "--validate", "--validate-repeats", "1",
                 "--validate-requests", "400", "--checkpoint", str(weights),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "predicted vs measured capacity" in text and "ordering" in text
    doc = json.loads((out / "validation.json").read_text())
    # The weights given are the ones the real loop served (rt-minilm6 has none shipped).
    assert doc["checkpoint"] == str(weights.resolve())
    for r in doc["rows"]:
        assert json.loads((Path(r["folder"]) / "plan.json").read_text())["checkpoint"] == \
            str(weights.resolve())
    labels = [r["label"] for r in doc["rows"]]
    assert labels == ["optimizer's choice", "no exits (best batching)"]
    for r in doc["rows"]:
        cap = json.loads((Path(r["folder"]) / "capacity.json").read_text())
        # Five rates around the prediction, each served once for real.
        assert len(cap["rates_rps"]) == 5 and len(cap["attained"]["0"]) == 5
        assert cap["rates_rps"][0] <= r["measured_rps"] <= cap["rates_rps"][-1]
        assert r["predicted_rps"] == pytest.approx(cap["predicted_rps"])


def test_the_space_searches_which_early_exits_are_on():
    import optuna

    from offramp.analysis.optimize.space import (
        default_space,
        every_exit_set,
        study_params,
        suggest,
    )
    from offramp.analysis.study.config import parse_config

    assert default_space("maxprob", True, [1, 8, 16, 32], n_exits=4).exit_sets == []
    space = default_space("maxprob", True, [1, 8, 16, 32], n_exits=4, search_exits=True)
    assert space.exit_sets == ["0", "1", "0,1", "2", "0,2", "1,2", "0,1,2"]
    trial = optuna.trial.FixedTrial({"policy": "maxprob", "exit_mode": "shrink",
                                     "maxprob.tolerance_pct": 99.5, "maxprob.exits": "1,2",
                                     "max_batch": 16, "max_wait_ms": 1.0})
    point = suggest(trial, space, full_cost_ms=2.0)
    assert point["policy.exits"] == [1, 2] and point["server.max_batch"] == 16
    cfg = parse_config({"policy": {"name": "maxprob", "tolerance_pct": 99.5},
                        "server": {"max_batch": 16, "max_wait_ms": 1.0}})
    assert study_params(cfg, space, 2.0)["maxprob.exits"] == "0,1,2"  # all on, as given
    assert every_exit_set(8) == []  # 7 early exits: not searched


def test_front_search_keeps_both_objectives_and_the_same_winner_rule(tmp_path):
    import optuna

    study = _study(tmp_path, _easy_trace())
    goal = Goal(Objective.LOAD, 30.0)
    settings = Settings(trials=8, batch=4, screen_requests=2000, finalists=1, seeds=1,
                        front=True)
    with ThreadPoolExecutor(1) as ex:
        res = optimize(study, goal, tmp_path / "out", ex, settings, baselines=False)
    kept = optuna.load_study(study_name="offramp-optimize",
                             storage=f"sqlite:///{tmp_path / 'out' / 'optuna.db'}")
    assert len(kept.directions) == 2
    done = [t for t in kept.trials if t.values is not None]
    assert done and all(len(t.values) == 2 for t in done)
    # Each trial's second value is its val relative accuracy.
    for t in done:
        assert t.values[1] == pytest.approx(t.user_attrs["outcome"]["val_relative_accuracy"] or 0)
    assert res.winner.feasible and res.winner.value == max(o.value for o in res.finalists)


def test_the_python_twin_finds_what_the_search_finds(tmp_path):
    import offramp

    study = _study(tmp_path, _easy_trace())
    with ThreadPoolExecutor(1) as ex:
        direct = optimize(study, Goal(Objective.LOAD, 30.0, min_relative_accuracy=0.99),
                          tmp_path / "a", ex, FAST, baselines=False)
    twin = offramp.optimize(study, tmp_path / "b", workers=1, settings=FAST, baselines=False,
                            slo_p99_ms=30.0, min_relative_accuracy=0.99)
    assert twin.winner.point == direct.winner.point and twin.winner.value == direct.winner.value
    assert (tmp_path / "b" / "best.yaml").exists()  # the folder the command writes


def test_a_space_file_changes_the_params_it_names_and_keeps_the_rest(tmp_path):
    from offramp.analysis.optimize.space import default_space, load_space
    from offramp.common.errors import InputError

    default = default_space("entropy", True, [1, 8, 32], 4, 0.99)
    path = tmp_path / "space.yaml"
    path.write_text("params: {maxprob: {tolerance_pct: {low: 98, high: 99.9}}}\n")
    space = load_space(path, default)
    assert space.params["maxprob"]["tolerance_pct"].low == 98.0
    assert space.params["patience"] == default.params["patience"]  # not dropped
    assert space.params["entropy"] == default.params["entropy"]
    for text, words in (("params: {maxprob: {nope: {low: 1, high: 2}}}", "has no field 'nope'"),
                        ("params: {nosuch: {x: {low: 1, high: 2}}}", "no such policy"),
                        ("params: {patience: {patience: {low: 0, high: 2}}}", "(ge 1)")):
        path.write_text(text + "\n")
        with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
            load_space(path, default)


def test_cli_set_changes_the_study_searched_and_a_resume_must_match(tmp_path, capsys):
    """``--set`` as in simulate: the search runs on the changed study (here a profile three
    times slower, and the SLO from slo.latency_ms), best.yaml carries the change, and the
    folder's search cannot be resumed with other --set items."""
    study = _study(tmp_path, _easy_trace())
    save_profile(synthetic_profile(segment_ms=3.0), tmp_path / "slow.json")
    common = ["--min-relative-accuracy", "0.99", "--trials", "6", "--finalists", "1",
              "--seeds", "2", "--screen-requests", "2000", "--no-baselines", "--workers", "1",
              "--quiet"]
    values = {}
    for name, sets in (("plain", []), ("slow", ["--set", "profile.path=slow.json"])):
        assert main(["optimize", study, "-o", str(tmp_path / name), *common, *sets,
                     "--set", "slo.latency_ms=40"]) == 0
        doc = json.loads((tmp_path / name / "optimize.json").read_text())
        assert doc["goal"]["slo_ms"] == 40.0
        values[name] = doc["winner"]["value"]
    assert doc["set"] == ["profile.path=slow.json", "slo.latency_ms=40"]
    best = load_config(tmp_path / "slow" / "best.yaml")
    assert Path(best.profile.path) == (tmp_path / "slow.json").resolve()
    assert values["slow"] < 0.6 * values["plain"]  # three times the work per batch
    capsys.readouterr()
    # The same items in another order: the same study, so the finished search reads back.
    assert main(["optimize", study, "-o", str(tmp_path / "slow"), *common,
                 "--set", "slo.latency_ms=40", "--set", "profile.path=slow.json"]) == 0
    assert json.loads((tmp_path / "slow" / "optimize.json").read_text())["winner"]["value"] \
        == values["slow"]
    for change in (["--set", "slo.latency_ms=40"],  # the profile --set left out
                   "refit"):  # the same --set, but the profile re-made into the same file
        if change == "refit":
            save_profile(synthetic_profile(segment_ms=2.0), tmp_path / "slow.json")
            change = ["--set", "profile.path=slow.json", "--set", "slo.latency_ms=40"]
        capsys.readouterr()
        assert main(["optimize", study, "-o", str(tmp_path / "slow"), *common, *change]) != 0
        err = capsys.readouterr().err
        assert "--set" in err and "another -o folder" in err and "Traceback" not in err
