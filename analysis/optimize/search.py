"""The search: Optuna's TPE sampler over the space, candidates evaluated in batches on any
``concurrent.futures`` executor (a process pool or a Dask cluster, same results either way),
cheap short runs first; the best few re-run with the study's full run at several seeds.

Resumable: trials live in an Optuna storage in the output folder (``optuna.db``). Each batch
of trials is asked with a sampler seeded by (seed, batch index), so a search killed between
batches and resumed asks what the uninterrupted search would have; trials a kill left running
are evaluated again with the parameters they were asked with.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from offramp.analysis.optimize.evaluate import Outcome, evaluate
from offramp.analysis.optimize.goal import Goal
from offramp.analysis.optimize.space import SearchSpace, suggest
from offramp.common.errors import InputError

STUDY_NAME = "offramp-optimize"
MAX_ASKS = 5  # at most this many trials asked per simulated one (the rest refused on val)


@dataclass(frozen=True)
class Settings:
    """How hard to search: ``trials`` simulated candidates (those refused on val by a
    constraint cost nothing and are not counted), asked in batches of ``batch`` (fixed, so
    results do not depend on the number of workers), the first ``startup`` at random (with
    ``front``: NSGA-II on the objective and the val relative accuracy, populations of 4
    batches), each
    screened on ``screen_requests`` x ``screen_replications`` per probe to ``rel_tol``; then
    the best ``finalists`` re-run with the study's run at ``seeds`` seeds."""

    trials: int = 60
    batch: int = 4
    startup: int = 16
    screen_requests: int = 10_000
    screen_replications: int = 2
    rel_tol: float = 0.02
    finalists: int = 3
    seeds: int = 3
    seed: int = 0
    front: bool = False  # NSGA-II on (objective, val relative accuracy) instead of TPE on one

    def __post_init__(self) -> None:
        for name in ("trials", "batch", "screen_requests", "screen_replications", "finalists",
                     "seeds"):
            if getattr(self, name) < 1:
                raise InputError("optimize", "--" + name.replace("_", "-"),
                                 f"must be >= 1, got {getattr(self, name)}", "raise it")

    def screen_run(self) -> dict[str, Any]:
        """The run settings of a screening evaluation."""
        return {"requests": self.screen_requests, "replications": self.screen_replications,
                "duration_s": None}


@dataclass(frozen=True)
class Job:
    """What every evaluation of one search shares (sent to the workers)."""

    base: dict[str, Any]
    goal: Goal
    study_dir: str
    source: str

    store: Any = None  # an Optuna study whose user attributes keep finished evaluations

    def run(self, executor: Executor, points: list[dict[str, Any]], run: dict[str, Any],
            seeds: int, rel_tol: float, detail: bool,
            starts: list[float | None] | None = None) -> list[Outcome]:
        """Evaluate ``points`` in order on the executor (``starts``: capacity searches'
        starting rates); with a ``store``, an evaluation done before (a resumed search) is
        read back, and each new one kept as soon as it finishes."""
        starts = starts or [None] * len(points)
        keys = [_key({"point": p, "run": run, "seeds": seeds, "rel_tol": rel_tol,
                      "detail": detail, "start": s}) for p, s in zip(points, starts, strict=True)]
        kept = self.store.user_attrs if self.store is not None else {}
        futures = {k: executor.submit(evaluate, self.base, p, self.goal, run, self.study_dir,
                                      self.source, seeds, rel_tol, detail, s)
                   for k, p, s in zip(keys, points, starts, strict=True)
                   if f"eval:{k}" not in kept}
        out = []
        for k in keys:
            if k in futures:
                outcome = futures[k].result()
                if self.store is not None:
                    self.store.set_user_attr(f"eval:{k}", json.loads(json.dumps(
                        outcome.as_dict(), default=float)))
            else:
                outcome = Outcome(**kept[f"eval:{k}"])
            out.append(outcome)
        return out


def _key(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True, default=str)


def open_study(out: Path, goal: Goal, space: SearchSpace, settings: Settings,
               study: dict[str, Any] | None = None) -> Any:
    """The Optuna study in ``out/optuna.db``: created, or resumed if it searched the same goal,
    space, settings and ``study`` (the study after ``--set`` and its input files' digests;
    else one clear error)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{(out / 'optuna.db').resolve()}"
    setup = json.loads(json.dumps({"goal": goal.as_dict(), "space": space.model_dump(
        mode="json"), "settings": asdict(settings), **({"study": study} if study else {})}))
    direction = "maximize" if goal.objective.maximize else "minimize"
    directions = [direction, "maximize"] if settings.front else [direction]
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, load_if_exists=True,
                                directions=directions)
    before = study.user_attrs.get("setup")
    if before is None:
        study.set_user_attr("setup", setup)
    elif before != setup:
        changed = sorted(k for k in setup.keys() | before.keys()
                         if setup.get(k) != before.get(k))
        raise InputError(str(out / "optuna.db"), ", ".join(changed), "this folder holds a "
                         "search of another goal, space, settings or study (its fields, --set, "
                         "or the trace or profile files)", "use another -o folder, "
                         "or the same options")
    return study


def _sampler(settings: Settings, batch_index: int) -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.front:  # the accuracy-objective front: a population of 4 batches
            return optuna.samplers.NSGAIISampler(
                seed=settings.seed * 100_003 + batch_index, population_size=4 * settings.batch)
        return optuna.samplers.TPESampler(
            seed=settings.seed * 100_003 + batch_index, n_startup_trials=settings.startup,
            multivariate=True, group=True)


def _tell(study: Any, trial: Any, outcome: Outcome) -> None:
    # Two constraints (<= 0: kept): the worst accuracy or budget violation; infeasible at all.
    trial.set_constraint("violation", max(outcome.violations.values(), default=0.0))
    trial.set_constraint("infeasible", 0.0 if outcome.feasible else 1.0)
    trial.set_user_attr("outcome", json.loads(json.dumps(outcome.as_dict(), default=float)))
    if len(study.directions) == 2:  # the front: the objective and val relative accuracy
        study.tell(trial, [outcome.value, outcome.val_relative_accuracy or 0.0])
    else:
        study.tell(trial, outcome.value)


def screen(study: Any, job: Job, space: SearchSpace, settings: Settings, executor: Executor,
           full_cost_ms: float, replicas: int, first: dict[str, Any] | None = None,
           progress: Callable[[int, int], None] | None = None) -> None:
    """Run trials until ``settings.trials`` are complete, ``first`` (trial parameters, e.g.
    the study's own configuration) first; trials a kill left running are marked failed and
    their parameters asked again first."""
    import optuna

    states = optuna.trial.TrialState
    if first is not None and not study.trials:
        study.enqueue_trial(first)
    known = {_key(t.user_attrs["point"]): Outcome(**t.user_attrs["outcome"])
             for t in study.get_trials(deepcopy=False, states=(states.COMPLETE,))}
    for t in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        study.tell(t.number, state=states.FAIL)
        study.enqueue_trial(t.params, skip_if_exists=False)
    done, asked_total = _counts(study)
    if progress is not None:
        progress(done, settings.trials)
    while done < settings.trials and asked_total < MAX_ASKS * settings.trials:
        study.sampler = _sampler(settings, asked_total // settings.batch)
        asked = []
        for _ in range(settings.batch):
            trial = study.ask()
            point = suggest(trial, space, full_cost_ms, replicas)
            trial.set_user_attr("point", point)
            asked.append((trial, point))
        _evaluate_and_tell(study, job, asked, known, settings, executor)
        done, asked_total = _counts(study)
        if progress is not None:
            progress(min(done, settings.trials), settings.trials)


def _counts(study: Any) -> tuple[int, int]:
    """(trials simulated, trials complete): a candidate refused on val costs no simulation
    and does not count against ``trials``."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sum(t.user_attrs["outcome"]["sim_requests"] > 0 for t in complete), len(complete)


def _evaluate_and_tell(study: Any, job: Job, asked: list[tuple[Any, dict[str, Any]]],
                       known: dict[str, Outcome], settings: Settings, executor: Executor
                       ) -> None:
    """Evaluate the asked points not seen before (a repeated point reuses its outcome)."""
    fresh = {}
    for _, point in asked:
        if _key(point) not in known:
            fresh[_key(point)] = point
    outcomes = dataclasses.replace(job, store=None).run(
        executor, list(fresh.values()), settings.screen_run(), 1, settings.rel_tol, False)
    known.update(zip(fresh, outcomes, strict=True))
    for trial, point in asked:
        _tell(study, trial, known[_key(point)])


def screened(study: Any) -> list[Outcome]:
    """Every complete trial's outcome, in trial order (a repeated point counted once)."""
    import optuna

    out, seen = [], set()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if _key(t.user_attrs["point"]) in seen:
            continue
        seen.add(_key(t.user_attrs["point"]))
        out.append(Outcome(**t.user_attrs["outcome"]))
    return out


def finalize(job: Job, executor: Executor, screened: list[Outcome], settings: Settings,
             run: dict[str, Any]) -> list[Outcome]:
    """The screened candidates re-run with the study's own run at ``settings.seeds`` seeds,
    to 1%, each capacity search starting at the screening's."""
    return job.run(executor, [o.point for o in screened], run, settings.seeds, 0.01, True,
                   [o.capacity_rps for o in screened])


def best_of(outcomes: list[Outcome], goal: Goal, n: int) -> list[Outcome]:
    """The ``n`` best feasible outcomes, best first."""
    feasible = [o for o in outcomes if o.feasible]
    return sorted(feasible, key=lambda o: -o.value if goal.objective.maximize else o.value)[:n]


def spent(outcomes: list[Outcome]) -> int:
    """Simulated requests over the outcomes."""
    return int(sum(o.sim_requests for o in outcomes))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds)."""
    t0 = time.perf_counter()
    return fn(), time.perf_counter() - t0
