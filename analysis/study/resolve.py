"""Turn a study config's names and paths into loaded traces, profiles and fitted policies."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from offramp.analysis.study.config import StudyConfig
from offramp.common.errors import InputError
from offramp.policies import ExitPolicy
from offramp.policies.configs import FromFileConfig
from offramp.policies.registry import build_policy
from offramp.policies.table import load_policy
from offramp.profiling.format import LatencyProfile, check_profile_matches, load_profile
from offramp.profiling.latency import LatencyModel, stage_costs
from offramp.profiling.shipped import shipped_profile_path
from offramp.sim.scenario import Scenario
from offramp.sim.service import ServiceTimes
from offramp.sim.workload import workload_from
from offramp.traces.format import ExitTrace, load_trace, require_splits


def _shipped_trace(name: str) -> Path | None:
    try:
        from offramp.traces.shipped import shipped_trace_path
    except ImportError:
        return None
    try:
        return shipped_trace_path(name)
    except (InputError, KeyError, FileNotFoundError):
        return None


def resolve_path(value: str, base: Path | None, shipped) -> Path:
    """A path relative to the config's folder, or a shipped file by name."""
    path = Path(value)
    if not path.is_absolute() and base is not None:
        path = base / path
    if path.exists():
        return path
    found = shipped(value)
    return Path(found) if found is not None else path


def resolve_workload(cfg: StudyConfig, base: Path | None = None) -> StudyConfig:
    """The study with a replay file's or a diurnal curve's path, relative to the config's
    folder, made absolute (so resolving it again changes nothing)."""
    wl = cfg.workload
    name = {"replay": "path", "diurnal": "curve_path"}.get(wl.kind)
    if name is None or getattr(wl, name) is None:
        return cfg
    path = Path(getattr(wl, name))
    if not path.is_absolute() and base is not None:
        path = (base / path).absolute()  # absolute: resolving twice changes nothing
    return cfg.model_copy(update={"workload": wl.model_copy(update={name: str(path)})})


def input_digests(cfg: StudyConfig, base: Path | None = None) -> dict[str, str]:
    """SHA-256 (16 hex digits) of the trace and profile files the study resolves to: what a
    resumed search checks it still reads (a profile re-levelled into the same path is
    another profile)."""
    import hashlib

    paths = {"trace": resolve_path(cfg.trace.path, base, _shipped_trace)}
    if cfg.profile.kind == "profile":
        paths["profile"] = resolve_path(cfg.profile.path, base, shipped_profile_path)
    return {k: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for k, p in paths.items()}


def load_study_trace(cfg: StudyConfig, base: Path | None = None) -> ExitTrace:
    """The study's trace, validated, with both splits (policies fit on val, judged on test)."""
    trace = load_trace(resolve_path(cfg.trace.path, base, _shipped_trace))
    require_splits(trace)
    return trace


# Loaded profiles and built stage tables are read-only: a process loads each file version once
# and builds each study server's tables once (the variants of a demo, sweep or capacity
# comparison, an optimizer's trials share them).
_PROFILES: OrderedDict[tuple, LatencyProfile] = OrderedDict()
_SERVICES: OrderedDict[tuple, tuple[LatencyProfile, ServiceTimes]] = OrderedDict()
_KEEP = 32


def _remember(cache: OrderedDict, key: tuple, value):  # noqa: ANN001, ANN202
    cache[key] = value
    while len(cache) > _KEEP:
        cache.popitem(last=False)
    return value


def _load_profile_once(path: Path) -> LatencyProfile:
    """The profile at ``path``, loaded once per file version (path, size, modification time)."""
    try:
        st = path.stat()
    except OSError:
        return load_profile(path)  # its own error names the file
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _PROFILES:
        _PROFILES.move_to_end(key)
        return _PROFILES[key]
    return _remember(_PROFILES, key, load_profile(path))


def load_study_profile(cfg: StudyConfig, trace: ExitTrace, base: Path | None = None
                       ) -> LatencyProfile | None:
    if cfg.profile.kind != "profile":
        return None
    profile = _load_profile_once(resolve_path(cfg.profile.path, base, shipped_profile_path))
    check_profile_matches(profile, trace.model_id, trace.n_exits, trace.source)
    return profile


def study_costs(cfg: StudyConfig, profile: LatencyProfile | None) -> LatencyModel | None:
    """The stage costs a study predicts with (None for an analytic service): the one
    constructor behind every command's simulation and every policy's cost estimates."""
    if profile is None:
        return None
    return stage_costs(profile, cfg.profile.costs, cfg.server.engine_sizes)


def build_service(cfg: StudyConfig, trace: ExitTrace, profile: LatencyProfile | None
                  ) -> ServiceTimes:
    """Stage-time tables for this study's server."""
    srv = cfg.server
    if profile is None:
        return ServiceTimes.analytic(cfg.profile.kind, cfg.profile.mean_ms, trace.n_exits,
                                     srv.max_batch)
    key = (id(profile), cfg.profile.costs, tuple(srv.engine_sizes or ()), trace.n_exits,
           srv.max_batch, srv.exit_mode, cfg.profile.latency)
    if key in _SERVICES and _SERVICES[key][0] is profile:
        _SERVICES.move_to_end(key)
        return _SERVICES[key][1]
    svc = ServiceTimes.from_latency(study_costs(cfg, profile), n_exits=trace.n_exits,
                                    max_batch=srv.max_batch, mode=srv.exit_mode,
                                    sampled=cfg.profile.latency == "sampled")
    return _remember(_SERVICES, key, (profile, svc))[1]


def fit_policy(cfg: StudyConfig, trace: ExitTrace, profile: LatencyProfile | None,
               base: Path | None = None) -> ExitPolicy:
    """The configured policy, fitted on the trace's val split (or loaded from a file).

    Policies that weigh latency (EENet, PAME, Gati, budgets) take it from the study's profile,
    PAME its batch size, exit mode and engine sizes from the study's server.
    """
    if isinstance(cfg.policy, FromFileConfig):
        given = Path(cfg.policy.from_file)
        path = given if given.is_absolute() or base is None else base / given
        if path != given and not path.exists():
            here = (f"; {given} is in the current folder: give {given.resolve()}"
                    if given.is_file() else "")
            raise InputError(path, "policy.from_file", "no such policy file",
                             f"a relative path is read from the study file's folder ({base})"
                             f"{here}; or write one with `offramp fit -o`")
        return load_policy(path).fit(trace, "val")
    return build_policy(cfg.policy, trace, study_costs(cfg, profile), cfg.server, "val")


def build_scenario(cfg: StudyConfig, trace: ExitTrace, base: Path | None = None,
                   policy: ExitPolicy | None = None) -> Scenario:
    """The frozen scenario a study serves: its profile's stage tables, the policy fitted on
    val (or ``policy``, already fitted), the server and the workload (a replay path relative
    to ``base``)."""
    cfg = resolve_workload(cfg, base)
    profile = load_study_profile(cfg, trace, base)
    service = build_service(cfg, trace, profile)
    if policy is None:
        policy = fit_policy(cfg, trace, profile, base)
    return Scenario(trace=trace, policy=policy, service=service, server=cfg.server,
                    workload=workload_from(cfg.workload), slo_ms=cfg.slo.latency_ms)
