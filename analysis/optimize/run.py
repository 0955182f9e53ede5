"""``optimize``: search, finalists, baselines, outputs (the whole command's work)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offramp.analysis.optimize import baselines as B
from offramp.analysis.optimize.evaluate import Outcome
from offramp.analysis.optimize.goal import Goal
from offramp.analysis.optimize.search import (
    Job,
    Settings,
    best_of,
    finalize,
    open_study,
    screen,
    screened,
    spent,
)
from offramp.analysis.optimize.space import (
    SearchSpace,
    default_space,
    every_exit_set,
    load_space,
    study_params,
)
from offramp.analysis.study.config import StudyConfig
from offramp.analysis.study.overrides import set_name, study_with_sets
from offramp.analysis.study.resolve import (
    input_digests,
    load_study_profile,
    load_study_trace,
    study_costs,
)
from offramp.common.errors import InputError
from offramp.common.outputs import check_output_dir
from offramp.policies.costs import exit_costs, full_model_cost
from offramp.traces.format import has_entropy

OUTPUTS = ("optuna.db", "trials.parquet", "optimize.json", "best.yaml", "front.png",
           "report.html")

Progress = Callable[[str, int, int], None]
BASELINES = ("none", "pame", "eenet", "grid", "study")


@dataclass
class Result:
    """Everything ``optimize`` found: the winner, the finalists, every screened trial, the
    baselines (label -> outcome) and what the search spent."""

    study: str
    goal: Goal
    space: SearchSpace
    settings: Settings
    winner: Outcome
    finalists: list[Outcome]
    trials: list[Outcome]
    base: dict[str, Any]  # the study searched (a mapping, after --set)
    sets: list[str] = field(default_factory=list)  # the --set items
    baselines: dict[str, Outcome] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    full_cost_ms: float = 0.0

    @property
    def named(self) -> str:
        """The name the searched study's errors go by (``PATH with --set`` after --set)."""
        return set_name(self.study, self.sets)


def prepare(study: str | Path, goal: Goal, space_file: str | Path | None, out: str | Path,
            sets: Sequence[str] = ()
            ) -> tuple[StudyConfig, dict[str, Any], SearchSpace, float, Path]:
    """Everything checked before a candidate runs: the output folder, the study (with the
    ``--set`` items ``sets`` applied: an open-loop workload with a latency profile), the space.
    Returns (study, its mapping, space, the full model's per-sample cost at batch 1, output
    folder)."""
    folder = check_output_dir(out, OUTPUTS, "optimize folder")
    cfg, named = study_with_sets(study, sets)
    if cfg.profile.kind != "profile":
        raise InputError(named, "profile.kind", "an analytic service time has no stages to "
                         "exit from", "optimize a study with a latency profile")
    if cfg.workload.kind == "closed":
        raise InputError(named, "workload.kind", "a closed loop has no arrival rate to search",
                         "use an open-loop workload (poisson, gamma, replay, mmpp, diurnal)")
    base_dir = Path(study).parent
    trace = load_study_trace(cfg, base_dir)
    profile = load_study_profile(cfg, trace, base_dir)
    full = full_model_cost(study_costs(cfg, profile), 1)
    cheapest = float(exit_costs(study_costs(cfg, profile), 1)[0])
    if goal.budget_ms is not None and goal.budget_ms < cheapest:
        raise InputError("optimize", "--budget-ms", f"{goal.budget_ms:g} ms per sample is below "
                         f"the cheapest exit ({cheapest:.4g} ms): no configuration meets it",
                         f"give a budget between {cheapest:.4g} and {full:.4g} ms (the full "
                         "model)")
    batches = sorted({int(r["batch"]) for r in profile.rows})
    name = getattr(cfg.policy, "base", "none")
    space = default_space(name, has_entropy(trace), batches, trace.n_exits,
                          goal.min_relative_accuracy)
    if space_file is not None:
        space = load_space(space_file, space)
    if space.exit_sets == "all":
        space = space.model_copy(update={"exit_sets": every_exit_set(trace.n_exits)})
    return cfg, cfg.model_dump(mode="json", exclude_unset=True), space, full, folder


def optimize(study: str | Path, goal: Goal, out: str | Path, executor: Executor,
             settings: Settings | None = None, space_file: str | Path | None = None,
             baselines: bool | Sequence[str] = True, progress: Progress | None = None,
             sets: Sequence[str] = ()) -> Result:
    """Search the space for the goal's best configuration (module docstrings of
    :mod:`.search` and :mod:`.baselines`); writes nothing but the Optuna storage.
    ``baselines``: all (True), none (False) or those named (:data:`BASELINES`); ``sets``: the
    study's fields changed first (``--set section.field=value`` items)."""
    settings = settings or Settings()
    cfg, base, space, full, folder = prepare(study, goal, space_file, out, sets)
    named = set_name(study, sets)
    job = Job(base, goal, str(Path(study).parent.resolve()), named)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    opt = open_study(folder, goal, space, settings,
                     {"fields": base, "inputs": input_digests(cfg, Path(study).parent)})
    job = dataclasses.replace(job, store=opt)  # finalists and baselines kept as they finish
    screen(opt, job, space, settings, executor, full, cfg.server.replicas,
           study_params(cfg, space, full),
           None if progress is None else lambda d, t: progress("search", d, t))
    trials = screened(opt)
    top = best_of(trials, goal, settings.finalists)
    if not top:
        reasons = sorted({o.reason for o in trials if o.reason})
        raise InputError(named, None, f"no candidate of {len(trials)} met the goal "
                         f"({goal.describe()}); seen: {'; '.join(reasons[:3])}",
                         "loosen a constraint or the SLO, or widen the space (--space)")
    search_s = time.perf_counter() - t0
    run = {"requests": cfg.run.requests, "replications": cfg.run.replications,
           "duration_s": cfg.run.duration_s}
    if progress is not None:
        progress("finalists", 0, len(top))
    finals = finalize(job, executor, top, settings, run)
    winners = best_of(finals, goal, 1)
    if not winners:
        raise InputError(named, None, "no finalist held the goal on the full run",
                         "raise --finalists or the screening run's length")
    result = Result(str(study), goal, space, settings, winners[0], finals, trials, base,
                    sets=list(sets), full_cost_ms=full)
    result.spent = {"search": spent(trials), "finalists": spent(finals)}
    result.seconds = {"search": _clock(opt, "search", search_s),
                      "finalists": _clock(opt, "finalists", time.perf_counter() - t0 - search_s)}
    chosen = BASELINES if baselines is True else () if baselines is False else tuple(baselines)
    if chosen:
        t1 = time.perf_counter()
        result.baselines = run_baselines(job, executor, cfg, space, settings, result, run,
                                         progress, chosen)
        result.seconds["baselines"] = _clock(opt, "baselines", time.perf_counter() - t1)
    return result


def _clock(opt: Any, phase: str, seconds: float) -> float:
    """Wall seconds a phase took over every run of this search (a resumed run adds its own)."""
    key = f"seconds:{phase}"
    total = float(opt.user_attrs.get(key, 0.0)) + seconds
    opt.set_user_attr(key, total)
    return round(total, 2)


def run_baselines(job: Job, executor: Executor, cfg: StudyConfig, space: SearchSpace,
                  settings: Settings, result: Result, run: dict[str, Any],
                  progress: Progress | None = None, chosen: Sequence[str] = ()
                  ) -> dict[str, Outcome]:
    """Each baseline named in ``chosen`` screened like a trial, its best re-run like a
    finalist."""
    goal = job.goal
    trace = load_study_trace(cfg, Path(job.study_dir))
    picks: dict[str, dict[str, Any]] = {}
    screen_run = settings.screen_run()
    if "none" in chosen:
        none = job.run(executor, B.no_exit_points(space), screen_run, 1, settings.rel_tol,
                       False)
        best_none = best_of(none, goal, 1)
        if best_none:
            picks["no exits (best batching)"] = best_none[0].point
    mode = cfg.server.exit_mode if cfg.server.exit_mode.consults_early_exits else \
        space.exit_modes[-1]
    if "pame" in chosen:
        pame = B.pame_point(goal, mode)
        picks[f"PAME τ={pame['policy.tolerance_pct']:g}"] = pame
    if "eenet" in chosen and has_entropy(trace) and trace.softmax is not None:
        budget = goal.budget_ms or result.winner.cost_ms
        picks[f"EENet budget {budget:.3g} ms"] = B.eenet_point(budget, mode)
    grid = _grid(job, executor, space, settings, result, screen_run) if "grid" in chosen \
        else None
    if grid is not None:
        picks["grid (same simulated requests)"] = grid.point
    if "study" in chosen:
        picks["the study as given"] = {}
    if progress is not None:
        progress("baselines", 0, len(picks))
    outs = job.run(executor, list(picks.values()), run, settings.seeds, 0.01, True)
    return dict(zip(picks, outs, strict=True))


def _grid(job: Job, executor: Executor, space: SearchSpace, settings: Settings,
          result: Result, screen_run: dict[str, Any]) -> Outcome | None:
    """The best feasible grid point evaluated within the search's simulated requests."""
    budget = result.spent["search"]
    seen: list[Outcome] = []
    for chunk in B.grid_batches(B.grid_points(space, result.full_cost_ms, settings.seed),
                                settings.batch):
        if spent(seen) >= budget:
            break
        seen += job.run(executor, chunk, screen_run, 1, settings.rel_tol, False)
    best = best_of(B.within_budget(seen, budget), job.goal, 1)
    return best[0] if best else None
