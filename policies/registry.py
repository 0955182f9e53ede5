"""Policies by name: a map name → (config class, policy class, build).

``build(cfg, ctx)`` makes the *unfitted* policy a config describes. ``ctx`` (a
:class:`FitContext`: latency profile and server) gives per-exit costs to the policies that
weigh them (EENet, Gati, PAME, the ``exp`` rule of maxprob/entropy with ``budget_ms``, the
budgeted oracle); it is None in :func:`make_policy`, which builds what needs only the trace.
:func:`build_policy` returns a policy fitted on a split, for every name.

Adding a policy: a config class (:mod:`policies.configs` style), a policy class, a build
function, and one :data:`BUILTIN` line (or :func:`register` from outside the package); the
name comes from the config class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from offramp.common.errors import InputError
from offramp.core.modes import ExitMode
from offramp.profiling.format import LatencyProfile
from offramp.profiling.latency import LatencyModel
from offramp.traces.format import ExitTrace

from . import configs as C
from . import parse
from .base import ExitPolicy
from .baselines import NoExit, Oracle, StaticExit
from .budget import exp_fractions
from .confidence import Entropy, MaxProb
from .costs import exit_costs, placement_costs
from .dynamic_ofa import DynamicOFA
from .eenet import EENet
from .gati import Gati
from .margin import Margin, MarginConfig
from .oracle_lp import BudgetedOracle
from .pame import PAME
from .patience import Patience
from .safe_exit import SafeExit, SafeExitConfig

parse_policy = parse.parse_policy


@dataclass(frozen=True)
class FitContext:
    """What fitting may use beyond the trace: the latency profile and the server."""

    latency: LatencyModel | LatencyProfile | None
    server: Any = None  # a sim.config.ServerConfig (PAME's batch size, exit mode, engines)

    def costs(self, cfg: C.PolicyConfigBase, cost_batch: int = 1) -> list[float]:
        """Per-sample cost of exiting at each exit, at batch ``cost_batch``."""
        if self.latency is None:
            raise InputError("policy", "profile.kind", f"{cfg.name} needs a measured latency "
                             "profile (its costs per exit)", "set profile.kind: profile with a "
                             "profile path")
        return exit_costs(self.latency, cost_batch)


def _need(ctx: FitContext | None, cfg: C.PolicyConfigBase) -> FitContext:
    if ctx is None:
        raise InputError("policy", cfg.base, f"{cfg.name} needs per-exit costs from a latency "
                         "profile", "build it with policies.build_policy(cfg, trace, latency, "
                         "server)")
    return ctx


def _confidence(cls: type[MaxProb] | type[Entropy]) -> Callable:
    def build(cfg: C.ConfidenceConfig, ctx: FitContext | None) -> ExitPolicy:
        if cfg.budget_ms is not None:
            costs = _need(ctx, cfg).costs(cfg, cfg.cost_batch)
            if cfg.exits is not None:
                raise InputError("policy", "exits", "budget_ms fits fractions over every exit",
                                 "use exits with tolerance_pct or thresholds")
            return cls(fractions=exp_fractions(costs, cfg.budget_ms))
        return cls(thresholds=cfg.thresholds, fractions=cfg.fractions,
                   tolerance_pct=cfg.tolerance_pct, exits=cfg.exits)
    return build


def _oracle(cfg: C.OracleConfig, ctx: FitContext | None) -> ExitPolicy:
    if cfg.budget_ms is None:
        return Oracle()
    return BudgetedOracle(cfg.budget_ms, _need(ctx, cfg).costs(cfg, cfg.cost_batch))


def _eenet(cfg: C.EENetConfig, ctx: FitContext | None) -> ExitPolicy:
    return EENet(cfg.budget_ms, _need(ctx, cfg).costs(cfg, cfg.cost_batch), n_fits=cfg.n_fits,
                 epochs=cfg.epochs, lr=cfg.lr, hidden_scale=cfg.hidden_scale,
                 decoupled_weight_decay=cfg.decoupled_weight_decay, seed=cfg.seed)


def _pame(cfg: C.PAMEConfig, ctx: FitContext | None) -> ExitPolicy:
    ctx = _need(ctx, cfg)
    if ctx.latency is None:
        ctx.costs(cfg)  # raises: PAME needs the profile
    srv = ctx.server
    return PAME(cfg.tolerance_pct, ctx.latency, getattr(srv, "max_batch", 32),
                exit_mode=getattr(srv, "exit_mode", ExitMode.SHRINK),
                engine_sizes=getattr(srv, "engine_sizes", None),
                tail_tolerance_pct=cfg.tail_tolerance_pct)


def _gati(cfg: C.GatiConfig, ctx: FitContext | None) -> ExitPolicy:
    ctx = _need(ctx, cfg)
    costs = ctx.costs(cfg, cfg.cost_batch)
    mode = ExitMode.parse(getattr(ctx.server, "exit_mode", ExitMode.SHRINK))
    # Each placement's own times under the server's exit mode (sync or asynchronous lookups).
    per_subset = (partial(placement_costs, ctx.latency, mode, batch=cfg.cost_batch)
                  if mode.consults_early_exits else None)
    return Gati(cfg.accuracy_target, costs, lookup_ms=cfg.lookup_ms,
                threshold=cfg.selector_threshold, subset_costs=per_subset)


def _safe_exit(cfg: SafeExitConfig, ctx: FitContext | None) -> ExitPolicy:
    costs = None if cfg.budget_ms is None else _need(ctx, cfg).costs(cfg, cfg.cost_batch)
    return SafeExit(cfg.budget_ms, cfg.tolerance_pct, costs, folds=cfg.folds, seed=cfg.seed,
                    target=cfg.target)


def _dynamic_ofa(cfg: C.DynamicOFAConfig, ctx: FitContext | None) -> ExitPolicy:
    levels = [REGISTRY[lvl.base].build(lvl, ctx) for lvl in cfg.levels]
    return DynamicOFA(levels, cfg.latency_target_ms, cfg.accuracy_target, window=cfg.window,
                      warmup=cfg.warmup, up_after=cfg.up_after,
                      switch_cost_ms=cfg.switch_cost_ms, lock=cfg.lock, hold_s=cfg.hold_s,
                      unit=cfg.unit)


class Registered(NamedTuple):
    config: type[C.PolicyConfigBase]
    policy: type[ExitPolicy]
    build: Callable[[Any, FitContext | None], ExitPolicy]

    @property
    def name(self) -> str:
        """The registry key, from the config class (one place spells a policy's name)."""
        return parse.config_name(self.config)


BUILTIN = (
    Registered(C.NoneConfig, NoExit, lambda cfg, ctx: NoExit()),
    Registered(C.StaticConfig, StaticExit, lambda cfg, ctx: StaticExit(cfg.exit)),
    Registered(C.MaxProbConfig, MaxProb, _confidence(MaxProb)),
    Registered(C.EntropyConfig, Entropy, _confidence(Entropy)),
    Registered(C.OracleConfig, Oracle, _oracle),
    Registered(C.PatienceConfig, Patience, lambda cfg, ctx: Patience(cfg.patience, cfg.tolerance_pct)),
    Registered(C.EENetConfig, EENet, _eenet),
    Registered(C.PAMEConfig, PAME, _pame),
    Registered(C.GatiConfig, Gati, _gati),
    Registered(C.DynamicOFAConfig, DynamicOFA, _dynamic_ofa),
    Registered(MarginConfig, Margin, lambda cfg, ctx: Margin(cfg.min_margin)),
    Registered(SafeExitConfig, SafeExit, _safe_exit),
)
REGISTRY: dict[str, Registered] = {entry.name: entry for entry in BUILTIN}
POLICIES: dict[str, type[ExitPolicy]] = {name: r.policy for name, r in REGISTRY.items()}
parse.use_registry(REGISTRY)


def register(config: type[C.PolicyConfigBase], policy: type[ExitPolicy],
             build: Callable[[Any, FitContext | None], ExitPolicy]) -> str:
    """Add a policy from outside the package; its name is its config's ``name`` default (its
    config joins the ``policy`` union). Returns the name."""
    entry = Registered(config, policy, build)
    REGISTRY[entry.name] = entry
    POLICIES[entry.name] = policy
    return entry.name


def _config(cfg: Any) -> C.PolicyConfigBase:
    return cfg if isinstance(cfg, C.PolicyConfigBase) else parse.parse_policy(cfg)


def make_policy(cfg: C.PolicyConfigBase | dict) -> ExitPolicy:
    """An unfitted policy from its config, for those that need only the trace.

    Policies that need per-exit costs or a latency profile are built by :func:`build_policy`.
    """
    cfg = _config(cfg)
    return REGISTRY[cfg.base].build(cfg, None)


def build_policy(cfg: C.PolicyConfigBase | dict, trace: ExitTrace,
                 latency: LatencyModel | LatencyProfile | None = None, server=None,
                 split: str = "val") -> ExitPolicy:
    """A policy fitted on ``split`` of the trace, for any name.

    ``latency`` (model or profile) gives the per-exit costs, at the config's ``cost_batch``;
    ``server`` (a ``sim.config.ServerConfig``) gives PAME its ``max_batch``, ``exit_mode`` and
    ``engine_sizes``.
    """
    return next(build_policies([cfg], trace, latency, server, split))


def build_policies(cfgs: Sequence[C.PolicyConfigBase | dict], trace: ExitTrace,
                   latency: LatencyModel | LatencyProfile | None = None, server=None,
                   split: str = "val") -> Iterator[ExitPolicy]:
    """:func:`build_policy` of each config, yielded in order (:func:`fit_as_ready`'s
    policies, put back in order: a policy whose fits were started in the pool comes when they
    are collected, after every policy not started so)."""
    ready: dict[int, ExitPolicy] = {}
    nxt = 0
    for i, policy in fit_as_ready(cfgs, trace, latency, server, split):
        ready[i] = policy
        while nxt in ready:
            yield ready.pop(nxt)
            nxt += 1


def fit_as_ready(cfgs: Sequence[C.PolicyConfigBase | dict], trace: ExitTrace,
                 latency: LatencyModel | LatencyProfile | None = None, server=None,
                 split: str = "val") -> Iterator[tuple[int, ExitPolicy]]:
    """(position in ``cfgs``, the policy fitted) for each config, as each is ready. The
    policies of a kind that fits several at once (``fit_together``: EENet's fits of every
    budget side by side, safe-exit's one scorer for every budget) are fitted together when the
    first of them is reached; a kind that can start its fits in the process pool
    (``start_together``: EENet's) starts them first and is collected last, the others fitted
    meanwhile. The same policies as one by one, in less time."""
    ctx = FitContext(latency, server)
    built = [REGISTRY[cfg.base].build(cfg, ctx) for cfg in map(_config, cfgs)]
    together: dict[type, list[int]] = {}
    for i, policy in enumerate(built):
        if hasattr(type(policy), "fit_together"):
            together.setdefault(type(policy), []).append(i)
    started = {kind: kind.start_together([built[i] for i in pos], trace, split)
               for kind, pos in together.items() if hasattr(kind, "start_together")}
    done = False
    try:
        for i, policy in enumerate(built):
            kind = type(policy)
            if kind in started:
                continue
            if kind not in together:
                built[i] = policy.fit(trace, split)
            elif i == together[kind][0]:
                kind.fit_together([built[j] for j in together[kind]], trace, split)
            yield i, built[i]
        for kind, pending in started.items():
            pending.collect()
            for i in together[kind]:
                yield i, built[i]
        done = True
    finally:
        if not done:  # a fit failed or the caller stopped: no started work left queued
            for pending in started.values():
                pending.cancel()
