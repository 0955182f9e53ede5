"""The search space: which policies, with each one's ``tunable`` ranges (policies/configs.py),
and the server's exit mode, ``max_batch`` and ``max_wait_ms`` (and routing when several
replicas serve). A ``--space`` YAML file replaces any of the defaults:

    policies: [none, maxprob, entropy, pame]
    exit_modes: [keep, shrink]
    max_batch: [8, 16, 32, 64]
    max_wait_ms: {low: 0.5, high: 16, log: true}
    routing: [round_robin, jsq]
    params: {maxprob: {tolerance_pct: {low: 98, high: 100}}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from offramp.analysis.study.config import load_yaml
from offramp.common.errors import InputError
from offramp.core.modes import ExitMode
from offramp.policies.configs import Tunable
from offramp.policies.registry import REGISTRY

# The largest max_batch candidates; a profile's own largest measured size caps them.
MAX_BATCH_CHOICES = (4, 8, 16, 32, 64, 128)
MAX_SEARCHED_EXITS = 5  # with more early exits, which are on is not searched by default


def unsearchable(name: str) -> str | None:
    """Why a search cannot vary policy ``name`` (None: it can)."""
    entry = REGISTRY.get(name)
    if entry is None:
        return f"unknown policy {name!r} (one of {sorted(REGISTRY)})"
    if name == "static":
        return "static:K exits every sample at one exit: compare it with offramp capacity"
    if name == "dynamic-ofa":
        return "dynamic-ofa switches at run time: search its levels instead"
    config = entry.config
    missing = [f for f, info in config.model_fields.items()
               if info.is_required() and f not in config.tunable and f != "name"]
    if missing:
        return (f"{name} needs {', '.join(missing)}, which has no search range: set it in "
                "the study and search the others")
    return None


class SearchSpace(BaseModel):
    """What a search may vary (``params``: per policy, ranges replacing its ``tunable`` ones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    policies: list[str] = Field(min_length=1)
    exit_modes: list[ExitMode] = Field([ExitMode.KEEP, ExitMode.SHRINK], min_length=1)
    max_batch: list[int] = Field(min_length=1)
    max_wait_ms: Tunable = Tunable(low=0.25, high=16.0, log=True)
    routing: list[str] = Field(["round_robin"], min_length=1)
    params: dict[str, dict[str, Tunable]] = {}
    exit_sets: list[str] | Literal["all"] = Field(
        [], description="early-exit sets a policy with an exits field may consult, as '0,2' "
        "(empty: all on, not searched; 'all': every non-empty set)")

    @field_validator("policies")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            why = unsearchable(name)
            if why:
                raise ValueError(why)
        return names

    @field_validator("exit_modes")
    @classmethod
    def _early(cls, modes: list[ExitMode]) -> list[ExitMode]:
        if ExitMode.NONE in modes:
            raise ValueError("exit mode none is the policy none: list none under policies")
        return modes

    @field_validator("max_batch")
    @classmethod
    def _sizes(cls, sizes: list[int]) -> list[int]:
        if any(b < 1 for b in sizes):
            raise ValueError("batch sizes must be >= 1")
        return sorted(set(sizes))

    @field_validator("exit_sets")
    @classmethod
    def _sets(cls, sets: list[str] | str) -> list[str] | str:
        if sets == "all":
            return sets
        for item in sets:
            parts = item.split(",")
            if not all(p.strip().isdigit() for p in parts) or len(set(parts)) != len(parts):
                raise ValueError(f"exit set {item!r} must list distinct exit indices, e.g. '0,2'")
        return sets

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, dict[str, Tunable]]) -> dict[str, dict[str, Tunable]]:
        for name, fields in params.items():
            if name not in REGISTRY:
                raise ValueError(f"params.{name}: no such policy (known: {', '.join(REGISTRY)})")
            known = REGISTRY[name].config.model_fields
            for field, rng in fields.items():
                if field not in known or field == "name":
                    raise ValueError(f"params.{name}.{field}: {name} has no field {field!r} "
                                     f"(its fields: {', '.join(f for f in known if f != 'name')})")
                for bound in known[field].metadata:  # the field's own limits (ge, gt, le, lt)
                    for attr, ok in (("ge", lambda v, b: v >= b), ("gt", lambda v, b: v > b),
                                     ("le", lambda v, b: v <= b), ("lt", lambda v, b: v < b)):
                        b = getattr(bound, attr, None)
                        if b is not None and not (ok(rng.low, b) and ok(rng.high, b)):
                            raise ValueError(f"params.{name}.{field}: {rng.low:g}..{rng.high:g} "
                                             f"leaves the field's range ({attr} {b:g})")
        return params

    @field_validator("routing")
    @classmethod
    def _routing(cls, names: list[str]) -> list[str]:
        allowed = ("round_robin", "random", "jsq", "shared")
        if set(names) - set(allowed):
            raise ValueError(f"routing must be among {allowed}")
        return names

    def tunables(self, policy: str) -> dict[str, Tunable]:
        """The ranges searched for ``policy``: its config's, replaced by ``params``."""
        return {**REGISTRY[policy].config.tunable, **self.params.get(policy, {})}

    def describe(self) -> str:
        """One line per dimension."""
        lines = [f"policies: {', '.join(self.policies)}",
                 f"exit modes: {', '.join(m.value for m in self.exit_modes)}",
                 f"max_batch: {self.max_batch}",
                 f"max_wait_ms: {self.max_wait_ms.low:g}..{self.max_wait_ms.high:g}"
                 + (" (log)" if self.max_wait_ms.log else "")]
        if len(self.routing) > 1:
            lines.append(f"routing: {', '.join(self.routing)}")
        if self.exit_sets:
            lines.append(f"early exits on: {len(self.exit_sets)} sets ({', '.join(self.exit_sets[:4])}"
                         f"{', ...' if len(self.exit_sets) > 4 else ''})")
        for name in self.policies:
            for f, t in self.tunables(name).items():
                per = f" x {t.per}" if t.per else ""
                lines.append(f"{name}.{f}: {t.low:g}..{t.high:g}{per}")
        return "\n".join(lines)


def every_exit_set(n_exits: int) -> list[str]:
    """Every non-empty set of the early exits, as '0,2' (none when there are more than
    :data:`MAX_SEARCHED_EXITS`)."""
    early = n_exits - 1
    if not 1 < early <= MAX_SEARCHED_EXITS:
        return []
    return [",".join(str(e) for e in range(early) if mask >> e & 1)
            for mask in range(1, 2 ** early)]


def default_space(study_policy: str, has_entropy: bool, profile_batches: list[int],
                  n_exits: int, min_relative_accuracy: float | None = None,
                  search_exits: bool = False) -> SearchSpace:
    """No exits, max-prob, entropy (when the trace holds it), patience and the study's own
    policy; exit modes keep and shrink; max_batch among 4..128 up to the profile's largest
    size; max_wait 0.25..16 ms; patience up to K-1 (K exits); with ``search_exits``, for
    policies with an ``exits`` field, every non-empty set of early exits (:func:`every_exit_set`).
    With a relative-accuracy floor,
    the τ ranges start a quarter point below it (τ is fitted on val to keep τ % of the full
    model's accuracy, so a candidate further below cannot keep the floor)."""
    names = ["none", "maxprob", *(["entropy"] if has_entropy else []), "patience"]
    if study_policy not in names and unsearchable(study_policy) is None:
        names.append(study_policy)
    top = max(profile_batches) if profile_batches else 32
    sizes = [b for b in MAX_BATCH_CHOICES if b <= top] or [top]
    params: dict[str, dict[str, Tunable]] = {}
    if min_relative_accuracy is not None:
        for name in names:
            t = REGISTRY[name].config.tunable.get("tolerance_pct") if name in REGISTRY else None
            if t is not None:
                low = min(t.high, max(t.low, 100.0 * min_relative_accuracy - 0.25))
                params[name] = {"tolerance_pct": t.model_copy(update={"low": low})}
    sets = every_exit_set(n_exits) if search_exits else []
    if "patience" in names:
        t = REGISTRY["patience"].config.tunable["patience"]
        params["patience"] = {"patience": t.model_copy(update={
            "high": float(max(t.low, min(t.high, n_exits - 1)))})}
    return SearchSpace(policies=names, max_batch=sizes, params=params, exit_sets=sets)


def load_space(path: str | Path, default: SearchSpace) -> SearchSpace:
    """``default`` with the fields a ``--space`` YAML gives replaced; one clear error."""
    doc = load_yaml(path)
    if not isinstance(doc, dict):
        raise InputError(path, None, "must be a mapping of search dimensions",
                         "see `offramp optimize --help` for the format")
    base = default.model_dump()
    if isinstance(doc.get("params"), dict):  # per policy and field: the defaults stay
        given = doc["params"]
        doc = {**doc, "params": {**base["params"], **{
            name: {**base["params"].get(name, {}), **fields} if isinstance(fields, dict)
            else fields for name, fields in given.items()}}}
    try:
        return SearchSpace(**{**base, **doc})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or None
        raise InputError(path, where, first["msg"].removeprefix("Value error, "),
                         "fix the search space (docs/optimize.md)") from None


def suggest(trial: Any, space: SearchSpace, full_cost_ms: float, replicas: int = 1
            ) -> dict[str, Any]:
    """The candidate an Optuna trial picks: study fields (``section.field``) to set."""
    name = trial.suggest_categorical("policy", space.policies)
    point: dict[str, Any] = {"policy.name": name}
    if name == "none":
        point["server.exit_mode"] = ExitMode.NONE.value
    else:
        point["server.exit_mode"] = trial.suggest_categorical(
            "exit_mode", [m.value for m in space.exit_modes])
    for field, t in space.tunables(name).items():
        scale = full_cost_ms if t.per == "full_cost_ms" else 1.0
        key = f"{name}.{field}"
        if t.integer:
            value: Any = trial.suggest_int(key, int(t.low), int(t.high), log=t.log)
        else:
            value = round(trial.suggest_float(key, t.low * scale, t.high * scale, log=t.log), 6)
        point[f"policy.{field}"] = value
    if space.exit_sets and "exits" in REGISTRY[name].config.model_fields:
        chosen = trial.suggest_categorical(f"{name}.exits", space.exit_sets)
        point["policy.exits"] = [int(e) for e in chosen.split(",")]
    point["server.max_batch"] = trial.suggest_categorical("max_batch", space.max_batch)
    w = space.max_wait_ms
    point["server.max_wait_ms"] = round(trial.suggest_float("max_wait_ms", w.low, w.high,
                                                            log=w.log), 4)
    if len(space.routing) > 1 and replicas > 1:
        point["server.routing"] = trial.suggest_categorical("routing", space.routing)
    return point


def study_params(cfg: Any, space: SearchSpace, full_cost_ms: float) -> dict[str, Any] | None:
    """The study's own configuration as a trial's parameters (the search's first candidate,
    so it never ends below what the user started from), or None if it lies outside the
    space."""
    name = getattr(cfg.policy, "base", None)
    if name not in space.policies or cfg.server.max_batch not in space.max_batch:
        return None
    w = space.max_wait_ms
    if not w.low <= cfg.server.max_wait_ms <= w.high:
        return None
    params: dict[str, Any] = {"policy": name, "max_batch": cfg.server.max_batch,
                              "max_wait_ms": cfg.server.max_wait_ms}
    if name != "none":
        if cfg.server.exit_mode not in space.exit_modes:
            return None
        params["exit_mode"] = cfg.server.exit_mode.value
    if space.exit_sets and "exits" in type(cfg.policy).model_fields:
        exits = cfg.policy.exits or sorted({int(e) for item in space.exit_sets
                                            for e in item.split(",")})
        params[f"{name}.exits"] = ",".join(str(e) for e in exits)
        if params[f"{name}.exits"] not in space.exit_sets:
            return None
    for field, t in space.tunables(name).items():
        value = getattr(cfg.policy, field, None)
        scale = full_cost_ms if t.per == "full_cost_ms" else 1.0
        if value is None or not t.low * scale <= value <= t.high * scale:
            return None
        params[f"{name}.{field}"] = value
    return params
