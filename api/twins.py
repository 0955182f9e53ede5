"""The Python twin of every command: the same work the CLI does, called from a script or a
notebook, with typed results (docs/api.md). Nothing here decides anything the commands do not:
each function calls the layer the command calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from offramp.analysis.study.config import StudyConfig
from offramp.policies import ExitPolicy
from offramp.profiling.format import LatencyProfile
from offramp.traces.format import ExitTrace


def load_trace(name_or_path: str | Path) -> ExitTrace:
    """A trace by shipped name (``"fmnist-resnet"``) or path, validated."""
    from offramp.analysis.study.resolve import _shipped_trace, resolve_path
    from offramp.traces.format import load_trace as load

    return load(resolve_path(str(name_or_path), None, _shipped_trace))


def load_profile(name_or_path: str | Path) -> LatencyProfile:
    """A latency profile by shipped name (``"fmnist-resnet-cpu"``) or path, validated."""
    from offramp.analysis.study.resolve import resolve_path
    from offramp.profiling.format import load_profile as load
    from offramp.profiling.shipped import shipped_profile_path

    return load(resolve_path(str(name_or_path), None, shipped_profile_path))


@dataclasses.dataclass(frozen=True)
class Study:
    """A study config and the folder its relative paths are read from."""

    config: StudyConfig
    base: Path | None = None
    source: str = "study"

    def with_fields(self, fields: Mapping[str, Any]) -> Study:
        """A copy with ``{"section.field": value}`` set, by the rule ``--set`` follows
        (naming another policy replaces the policy section whole)."""
        from offramp.analysis.study.config import parse_config
        from offramp.analysis.study.overrides import apply_fields

        data = apply_fields(self.to_dict(), dict(fields), self.source)
        return Study(parse_config(data, f"{self.source} with {dict(fields)}"), self.base,
                     self.source)

    def to_dict(self) -> dict[str, Any]:
        """The study as the YAML mapping it came from (fields not given are left out)."""
        return self.config.model_dump(mode="json", exclude_unset=True)

    def save(self, path: str | Path) -> Path:
        """Write the study as YAML, its files' paths made absolute so it runs from anywhere."""
        import yaml

        from offramp.common.atomic import atomic_path

        data = self.to_dict()
        if self.base is not None:
            for section, key in (("trace", "path"), ("profile", "path"), ("policy", "from_file"),
                                 ("workload", "path"), ("workload", "curve_path")):
                value = (data.get(section) or {}).get(key)
                if value and (self.base / value).exists():
                    data[section][key] = str((self.base / value).resolve())
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(data, sort_keys=False))
        return Path(path)


def load_study(source: str | Path | Mapping[str, Any] | StudyConfig | Study,
               fields: Mapping[str, Any] | None = None) -> Study:
    """A study from a YAML file, a mapping or a config (relative paths of a mapping are read
    from the current folder), with ``fields`` set as ``--set`` would."""
    from offramp.analysis.study.config import load_config, parse_config

    if isinstance(source, Study):
        study = source
    elif isinstance(source, StudyConfig):
        study = Study(source, Path.cwd())
    elif isinstance(source, Mapping):
        study = Study(parse_config(dict(source), "study"), Path.cwd())
    else:
        study = Study(load_config(source), Path(source).parent, str(source))
    return study.with_fields(fields) if fields else study


@dataclasses.dataclass(frozen=True)
class Summary:
    """Every metric of a run: its mean over replications and the 95% CI half-width."""

    metrics: Mapping[str, Mapping[str, float]]

    def __getitem__(self, metric: str) -> float:
        return float(self.metrics[metric]["mean"])

    def ci95(self, metric: str) -> float:
        return float(self.metrics[metric]["ci95"])

    def to_frame(self) -> pd.DataFrame:
        """One row per metric: mean and ci95."""
        return pd.DataFrame([{"metric": k, "mean": v["mean"], "ci95": v["ci95"]}
                             for k, v in self.metrics.items()]).set_index("metric")


@dataclasses.dataclass(frozen=True)
class Run:
    """A simulated study: its summary, the fitted policy, and what ``simulate -o`` writes."""

    study: Study
    summary: Summary
    policy: ExitPolicy
    output: Any  # offramp.analysis.study.run.StudyOutput

    def requests(self) -> pd.DataFrame:
        """Per-request results (as ``requests.parquet``): latency, queue and service time,
        exit, correctness, replica, batch."""
        from offramp.analysis.study.run import requests_frame

        return requests_frame(self.output)

    def write(self, folder: str | Path) -> Path:
        """The run folder ``offramp simulate -o`` writes (config, requests, summary, plot)."""
        from offramp.analysis.study.run import write_run

        return write_run(self.output, Path(folder))


def _scenario(study: Study, policy: ExitPolicy | None):
    from offramp.analysis.study.resolve import build_scenario, load_study_trace, resolve_workload

    cfg = resolve_workload(study.config, study.base)
    return cfg, build_scenario(cfg, load_study_trace(cfg, study.base), study.base, policy)


def fit_policy(study: Study | str | Path) -> ExitPolicy:
    """The study's policy fitted on its trace's val split (what every command simulates)."""
    study = load_study(study)
    return _scenario(study, None)[1].policy


def simulate(study: Study | str | Path, policy: ExitPolicy | None = None,
             progress: Callable[[int], None] | None = None) -> Run:
    """``offramp simulate``: every replication of the study (``policy``: an already fitted
    policy instead of the study's own fit)."""
    from offramp.analysis.study.run import run_study

    study = load_study(study)
    out = run_study(study.config, study.base, progress, policy)
    return Run(study, Summary(out.result.summary), out.policy, out)


@dataclasses.dataclass(frozen=True)
class Capacity:
    """``offramp capacity``: the highest rate that meets the SLO, and the study there."""

    capacity_rps: float
    plus_minus_rps: float
    at_capacity: Mapping[str, Any]  # p50/p99, accuracy, exit fractions, busy, policy
    search: Any  # offramp.analysis.studies.capacity.CapacityResult (every probe)


def capacity(study: Study | str | Path, slo_p99_ms: float | None = None,
             attainment: float = 0.99, slo_mean_ms: float | None = None,
             policy: ExitPolicy | None = None, rel_tol: float = 0.01,
             cost_per_replica_hour: float | None = None) -> Capacity:
    """The study's capacity at ``p{attainment} <= slo_p99_ms`` (default: the study's
    ``slo.latency_ms``) or at a mean latency bound, with common random numbers across probes
    (priced: ``at_capacity["cost_per_million"]``, as ``--cost-per-replica-hour`` gives)."""
    from offramp.analysis.studies.capacity import capacity_explained
    from offramp.analysis.study.cost import cost_per_million
    from offramp.common.errors import InputError

    study = load_study(study)
    if slo_p99_ms is None and slo_mean_ms is None:
        slo_p99_ms = study.config.slo.latency_ms
    if (slo_p99_ms is None) == (slo_mean_ms is None):
        raise InputError("capacity", "slo_p99_ms", "give one of slo_p99_ms and slo_mean_ms "
                         "(or slo.latency_ms in the study)", "e.g. slo_p99_ms=20")
    stat = "attainment" if slo_p99_ms is not None else "mean"
    res, there = capacity_explained(study.config, study.base, slo_p99_ms or slo_mean_ms,
                                    attainment, stat, rel_tol, policy=policy)
    there["cost_per_million"] = cost_per_million(cost_per_replica_hour,
                                                 study.config.server.replicas, res.capacity_rps)
    return Capacity(res.capacity_rps, res.plus_minus_rps, there, res)


def _study_file(study: Study | str | Path, folder: Path) -> Path:
    """A study as the file a folder-writing command takes: a path as given, a :class:`Study`
    saved as ``FOLDER.study.yaml`` beside the folder."""
    if not isinstance(study, Study):
        return Path(study)
    return study.save(folder.with_name(f"{folder.name}.study.yaml"))


def _executor(workers: int | None) -> Executor:
    import os

    return ProcessPoolExecutor(max_workers=workers or max(1, os.cpu_count() or 1))


def sweep(study: Study | str | Path, grid: Mapping[str, Sequence[Any]] | str | Path,
          out: str | Path, workers: int | None = None) -> pd.DataFrame:
    """``offramp sweep``: every point of ``grid`` (``{"server.max_batch": [8, 16]}``, or a
    grid YAML) run into ``out`` (resumable); one row per point."""
    import yaml

    from offramp.analysis.studies.sweep import run_sweep

    out = Path(out)
    if isinstance(grid, Mapping):
        from offramp.common.atomic import atomic_path

        path = out.with_name(f"{out.name}.grid.yaml")
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump({"grid": {k: list(v) for k, v in grid.items()}}))
        grid = path
    with _executor(workers) as ex:
        return run_sweep(_study_file(study, out), grid, out, ex)


def optimize(study: Study | str | Path, out: str | Path, goal: Any = None,
             workers: int | None = None, trials: int | None = None,
             baselines: bool | Sequence[str] = True, settings: Any = None,
             **goal_fields: Any) -> Any:
    """``offramp optimize``: the configuration that meets the SLO at the least cost. ``goal``:
    an :class:`offramp.analysis.optimize.goal.Goal`, or its fields as keywords (default: the
    largest load at the study's SLO; ``objective="accuracy"``, ``load_rps=``,
    ``min_relative_accuracy=0.99``, ...; ``settings``: the search's
    :class:`offramp.analysis.optimize.search.Settings`). Writes the folder the command writes (``best.yaml``,
    trials, front, page) and returns the result (``.winner``, ``.finalists``, ``.baselines``)."""
    from offramp.analysis.optimize.goal import Goal, Objective
    from offramp.analysis.optimize.output import write
    from offramp.analysis.optimize.run import optimize as run
    from offramp.analysis.optimize.search import Settings

    out = Path(out)
    path = _study_file(study, out)
    if goal is None:
        slo = goal_fields.pop("slo_p99_ms", None) or load_study(path).config.slo.latency_ms
        goal = Goal(Objective(goal_fields.pop("objective", "load")), slo, **goal_fields)
    settings = settings or (Settings() if trials is None else Settings(trials=trials))
    with _executor(workers) as ex:
        result = run(path, goal, out, ex, settings, baselines=baselines)
    write(result, out, f"offramp.optimize({str(path)!r}, {str(out)!r}, {goal!r})")
    return result


def validate(study: Study | str | Path, out: str | Path, modes: Sequence[str] = ("shrink",),
             utilisation: Sequence[float] = (0.3, 0.6), repeats: int = 3, requests: int = 3000,
             device: str = "cpu", real_from: str | Path | None = None,
             profiler_costs: bool = False, **plan: Any) -> dict[str, Any]:
    """``offramp validate``: serve the study for real (or take ``real_from``'s runs), simulate
    the same arrivals and judge each cell; returns the judged table and the document written
    as ``validation.json``."""
    from offramp.analysis.validation.run import judge_folder, serve_real

    study = load_study(study)
    folder = Path(real_from) if real_from is not None else Path(out)
    if real_from is None:
        serve_real(study.config, study.base, folder, device, modes,
                   [{"utilisation": u} for u in utilisation], repeats, requests,
                   log=lambda *_: None, **plan)
    return judge_folder(study.config, study.base, folder, profiler_costs=profiler_costs)


def report(folder: str | Path, output: str | Path | None = None) -> Path:
    """``offramp report``: the self-contained HTML page of a run, sweep, capacity, demo or
    optimize folder (default: ``FOLDER/report.html``)."""
    from offramp.analysis.report.html import report as page
    from offramp.common.atomic import atomic_path

    dest = Path(output) if output else Path(folder) / "report.html"
    with atomic_path(dest, suffix=".html") as tmp:
        tmp.write_text(page(folder), encoding="utf-8")
    return dest
