"""Policies by name, and the validated ``policy`` section of a study config.

``make_policy(cfg)`` builds an unfitted policy for everything that needs only the trace
(``none``, ``static:K``, ``maxprob``/``entropy`` from thresholds, fractions or a tolerance,
``patience``, ``oracle``, and ``dynamic-ofa`` over such levels). ``build_policy(cfg, trace,
latency, server)`` returns a *fitted* policy for every name, computing the per-exit costs
(:mod:`policies.costs`, at batch ``cost_batch``) for those that need them: ``eenet``,
``gati``, ``pame``, the ``exp`` baseline (``maxprob``/``entropy`` with ``budget_ms``) and the
budgeted ``oracle`` (``oracle`` with ``budget_ms``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from offramp.profiling.format import LatencyProfile
from offramp.profiling.latency import LatencyModel
from offramp.traces.errors import InputError
from offramp.traces.format import ExitTrace

from .base import ExitPolicy
from .baselines import NoExit, Oracle, StaticExit
from .confidence import Entropy, MaxProb
from .costs import exit_costs
from .dynamic_ofa import DynamicOFA
from .eenet import EENet, exp_fractions
from .gati import Gati
from .oracle_lp import BudgetedOracle
from .pame import PAME
from .patience import Patience

POLICIES: dict[str, type[ExitPolicy]] = {
    cls.name: cls for cls in (NoExit, StaticExit, MaxProb, Entropy, Oracle, Patience, EENet,
                              PAME, Gati, DynamicOFA)
}

_CONF = {"thresholds", "fractions", "tolerance_pct", "budget_ms", "cost_batch"}
_DOFA = {"levels", "latency_target_ms", "accuracy_target", "window", "warmup", "up_after",
         "switch_cost_ms", "lock", "hold_s"}
ALLOWED: dict[str, set[str]] = {
    "none": set(), "static": set(), "maxprob": _CONF, "entropy": _CONF,
    "oracle": {"budget_ms", "cost_batch"}, "patience": {"patience", "tolerance_pct"},
    "eenet": {"budget_ms", "cost_batch", "n_fits", "epochs", "seed"},
    "pame": {"tolerance_pct", "tail_tolerance_pct"},
    "gati": {"accuracy_target", "cost_batch", "lookup_ms", "selector_threshold"},
    "dynamic-ofa": _DOFA,
}


class PolicyConfig(BaseModel):
    """``name`` (one of :data:`POLICIES`, static as ``static:K``) and how to fit it.

    Only the fields a policy uses may differ from their defaults (anything else is an error).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "none"
    thresholds: list[float] | None = Field(None, description="K-1 thresholds, policy units")
    fractions: list[float] | None = Field(None, description="K target exit fractions (fit on val)")
    tolerance_pct: float | None = Field(None, description="PAME's τ: keep τ % of full accuracy")
    budget_ms: float | None = Field(None, gt=0, description="average cost per sample (eenet, "
                                    "exp fractions for maxprob/entropy, budgeted oracle)")
    cost_batch: int = Field(1, ge=1, description="batch size the per-sample exit costs are taken at")
    patience: int | None = Field(None, ge=1, description="patience: unchanged predictions to exit")
    accuracy_target: float | None = Field(None, gt=0, le=1,
                                          description="absolute accuracy (gati, dynamic-ofa)")
    n_fits: int = Field(3, ge=1, description="eenet: fits to keep the best of")
    epochs: int = Field(150, ge=1, description="eenet: training epochs per fit")
    seed: int = Field(0, ge=0, description="eenet: seed of the first fit")
    tail_tolerance_pct: float = Field(5.0, ge=0, description="pame: allowed rise of the "
                                      "worst-case batch latency over no exits")
    lookup_ms: float = Field(0.0, ge=0, description="gati: extra latency of a hit's lookup")
    selector_threshold: float | None = Field(0.5, gt=0, lt=1, description="gati: hit iff P > this "
                                             "(null: searched on val)")
    levels: list[PolicyConfig] | None = Field(None, description="dynamic-ofa: operating points, "
                                              "cheapest first")
    latency_target_ms: float | None = Field(None, gt=0, description="dynamic-ofa: window target")
    window: int = Field(20, ge=1, description="dynamic-ofa: requests in the latency window")
    warmup: int = Field(20, ge=0, description="dynamic-ofa: requests skipped after a switch")
    up_after: int = Field(70, ge=0, description="dynamic-ofa: requests at a level before a rise")
    switch_cost_ms: float = Field(0.0, ge=0, description="dynamic-ofa: stall per switch")
    lock: bool = Field(True, description="dynamic-ofa: hold rises after a failed one")
    hold_s: float = Field(5.0, ge=0, description="dynamic-ofa: how long a lock holds")


PolicyConfig.model_rebuild()


def _parse(cfg: PolicyConfig) -> tuple[str, str]:
    base, _, arg = cfg.name.partition(":")
    if base not in POLICIES:
        raise InputError("policy", "name", f"unknown policy {cfg.name!r}",
                         f"use one of {sorted(POLICIES)} (static as static:K)")
    if base == "static" and not arg.isdigit():
        raise InputError("policy", "name", f"{cfg.name!r} needs an exit index",
                         "write static:K, e.g. static:1")
    if base != "static" and arg:
        raise InputError("policy", "name", f"{base} takes no ':' argument", f"write {base}")
    given = {f for f, info in PolicyConfig.model_fields.items()
             if f != "name" and getattr(cfg, f) != info.default}
    extra = sorted(given - ALLOWED[base])
    if extra:
        what = "fitting options" if base in ("none", "static", "oracle") else extra[0]
        raise InputError("policy", extra[0], f"{cfg.name} takes no {what}", "remove it")
    return base, arg


def _needs_costs(base: str, cfg: PolicyConfig) -> bool:
    return base in ("eenet", "gati", "pame") or (
        base in ("maxprob", "entropy", "oracle") and cfg.budget_ms is not None)


def _confidence_args(base: str, cfg: PolicyConfig) -> dict:
    args = {k: getattr(cfg, k) for k in ("thresholds", "fractions", "tolerance_pct")
            if getattr(cfg, k) is not None}
    if len(args) + (cfg.budget_ms is not None) != 1:
        raise InputError("policy", base, "needs thresholds, fractions or tolerance_pct "
                         "(or budget_ms), exactly one", "set one, e.g. tolerance_pct: 99")
    return args


def _required(cfg: PolicyConfig, base: str, *fields: str) -> None:
    for f in fields:
        if getattr(cfg, f) is None:
            raise InputError("policy", f, f"{base} needs {f}", f"set policy.{f}")


def make_policy(cfg: PolicyConfig) -> ExitPolicy:
    """Build an unfitted policy from its config; unknown names give one clear error.

    Policies that need per-exit costs or a latency profile are built by :func:`build_policy`.
    """
    base, arg = _parse(cfg)
    if base in ("maxprob", "entropy"):
        args = _confidence_args(base, cfg)
    if _needs_costs(base, cfg):
        raise InputError("policy", base, f"{cfg.name} needs per-exit costs from a latency "
                         "profile", "build it with policies.build_policy(cfg, trace, latency, "
                         "server)")
    if base == "static":
        return StaticExit(int(arg))
    if base in ("maxprob", "entropy"):
        return POLICIES[base](**args)
    if base == "patience":
        return Patience(cfg.patience, cfg.tolerance_pct)
    if base == "dynamic-ofa":
        return _dynamic_ofa(cfg, [make_policy(lvl) for lvl in cfg.levels or []])
    return POLICIES[base]()


def _dynamic_ofa(cfg: PolicyConfig, levels: list[ExitPolicy]) -> DynamicOFA:
    _required(cfg, "dynamic-ofa", "levels", "latency_target_ms", "accuracy_target")
    return DynamicOFA(levels, cfg.latency_target_ms, cfg.accuracy_target, window=cfg.window,
                      warmup=cfg.warmup, up_after=cfg.up_after,
                      switch_cost_ms=cfg.switch_cost_ms, lock=cfg.lock, hold_s=cfg.hold_s)


def build_policy(cfg: PolicyConfig, trace: ExitTrace,
                 latency: LatencyModel | LatencyProfile | None = None, server=None,
                 split: str = "val") -> ExitPolicy:
    """A policy fitted on ``split`` of the trace, for any name.

    ``latency`` (model or profile) gives the per-exit costs, at batch ``cfg.cost_batch``;
    ``server`` (a ``sim.config.ServerConfig``) gives PAME its ``max_batch``, ``exit_mode`` and
    ``engine_sizes``.
    """
    base, _ = _parse(cfg)
    if base == "dynamic-ofa":
        levels = [build_policy(lvl, trace, latency, server, split) for lvl in cfg.levels or []]
        return _dynamic_ofa(cfg, levels).fit(trace, split)
    if not _needs_costs(base, cfg):
        return make_policy(cfg).fit(trace, split)
    if latency is None:
        raise InputError("policy", base, f"{cfg.name} needs a measured latency profile",
                         "set profile.kind: profile with a profile path")
    if base == "pame":
        _required(cfg, base, "tolerance_pct")
        max_batch = getattr(server, "max_batch", 32)
        mode = getattr(server, "exit_mode", "shrink")
        sizes = getattr(server, "engine_sizes", None)
        return PAME(cfg.tolerance_pct, latency, max_batch, exit_mode=mode, engine_sizes=sizes,
                    tail_tolerance_pct=cfg.tail_tolerance_pct).fit(trace, split)
    costs = exit_costs(latency, cfg.cost_batch)
    if base == "eenet":
        _required(cfg, base, "budget_ms")
        policy = EENet(cfg.budget_ms, costs, n_fits=cfg.n_fits, epochs=cfg.epochs, seed=cfg.seed)
    elif base == "gati":
        _required(cfg, base, "accuracy_target")
        policy = Gati(cfg.accuracy_target, costs, lookup_ms=cfg.lookup_ms,
                      threshold=cfg.selector_threshold)
    elif base == "oracle":
        policy = BudgetedOracle(cfg.budget_ms, costs)
    else:
        _confidence_args(base, cfg)
        policy = POLICIES[base](fractions=exp_fractions(costs, cfg.budget_ms))
    return policy.fit(trace, split)
