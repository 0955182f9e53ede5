"""Policies by name, and the validated ``policy`` section of a study config."""

from __future__ import annotations

from offramp.traces.errors import InputError
from pydantic import BaseModel, ConfigDict, Field

from .base import ExitPolicy
from .baselines import NoExit, Oracle, StaticExit
from .confidence import Entropy, MaxProb

POLICIES: dict[str, type[ExitPolicy]] = {
    cls.name: cls for cls in (NoExit, StaticExit, MaxProb, Entropy, Oracle)
}


class PolicyConfig(BaseModel):
    """``name`` (``none``, ``static:K``, ``maxprob``, ``entropy``, ``oracle``) and how to fit it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "none"
    thresholds: list[float] | None = Field(None, description="K-1 thresholds, policy units")
    fractions: list[float] | None = Field(None, description="K target exit fractions (fit on val)")
    tolerance_pct: float | None = Field(None, description="PAME's τ: keep τ % of full accuracy")


def make_policy(cfg: PolicyConfig) -> ExitPolicy:
    """Build an unfitted policy from its config; unknown names give one clear error."""
    base, _, arg = cfg.name.partition(":")
    if base not in POLICIES:
        raise InputError("policy", "name", f"unknown policy {cfg.name!r}",
                         f"use one of {sorted(POLICIES)} (static as static:K)")
    cls = POLICIES[base]
    fit_args = {k: getattr(cfg, k) for k in ("thresholds", "fractions", "tolerance_pct")
                if getattr(cfg, k) is not None}
    if base == "static":
        if not arg.isdigit():
            raise InputError("policy", "name", f"{cfg.name!r} needs an exit index",
                             "write static:K, e.g. static:1")
        if fit_args:
            raise InputError("policy", next(iter(fit_args)), "static:K takes no fitting options",
                             "remove it")
        return StaticExit(int(arg))
    if arg:
        raise InputError("policy", "name", f"{base} takes no ':' argument", f"write {base}")
    if base in ("maxprob", "entropy"):
        if not fit_args:
            raise InputError("policy", base, "needs thresholds, fractions or tolerance_pct",
                             "set one, e.g. tolerance_pct: 99")
        return cls(**fit_args)
    if fit_args:
        raise InputError("policy", next(iter(fit_args)), f"{base} takes no fitting options",
                         "remove it")
    return cls()
