"""One frozen config class per policy: its own fields, units, bounds and tunable ranges.

A ``policy`` section (or a Python dict) is parsed by :func:`parse_policy` into the class its
``name`` selects: a pydantic union, discriminated on the name, of every config class in the
registry (:data:`offramp.policies.registry.REGISTRY`; ``static:K`` selects
:class:`StaticConfig`). A field another policy owns, a required field left out or a bound
broken is one :class:`InputError` naming the policy and the field.

``tunable`` on each class names the parameters a search may vary and their ranges
(:class:`Tunable`); a range ``per`` the full model's cost is multiplied by it first.
"""

from __future__ import annotations

import re
import threading
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from offramp.common.errors import InputError


class Tunable(BaseModel):
    """A search range for one parameter: [low, high], log-spaced or not, integer or not;
    ``per``: the range is a multiple of this quantity (e.g. the full model's cost in ms)."""

    model_config = ConfigDict(frozen=True)
    low: float
    high: float
    log: bool = False
    integer: bool = False
    per: Literal["", "full_cost_ms"] = ""


class PolicyConfigBase(BaseModel):
    """Fields every policy config has: ``name`` (the registry key)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    tunable: ClassVar[dict[str, Tunable]] = {}
    name: str

    @property
    def base(self) -> str:
        """The registry key: the name without a ``:K`` argument."""
        return self.name.partition(":")[0]


class NoneConfig(PolicyConfigBase):
    """``none``: never exit early (the baseline)."""

    name: Literal["none"] = "none"


class StaticConfig(PolicyConfigBase):
    """``static:K``: every sample exits at exit K."""

    name: str = "static:0"

    @field_validator("name")
    @classmethod
    def _has_exit(cls, v: str) -> str:
        base, _, arg = v.partition(":")
        if base != "static" or re.fullmatch(r"[0-9]+", arg) is None:
            raise ValueError(f"{v!r} needs an exit index (write static:K, e.g. static:1)")
        return v

    @property
    def exit(self) -> int:
        return int(self.name.partition(":")[2])


class ConfidenceConfig(PolicyConfigBase):
    """``maxprob`` / ``entropy``: per-exit thresholds, given or fitted on val (exactly one way)."""

    tunable: ClassVar[dict[str, Tunable]] = {"tolerance_pct": Tunable(low=90.0, high=100.0)}
    thresholds: list[float] | None = Field(None, description="K-1 thresholds, policy units")
    fractions: list[float] | None = Field(None, description="K target exit fractions (fit on val)")
    tolerance_pct: float | None = Field(None, description="PAME's τ: keep τ % of full accuracy")
    budget_ms: float | None = Field(None, gt=0, description="average cost per sample: EENet's "
                                    "geometric exit fractions (needs a latency profile)")
    cost_batch: int = Field(1, ge=1, description="batch size the per-sample exit costs are taken at")

    @model_validator(mode="after")
    def _exactly_one(self) -> ConfidenceConfig:
        given = [f for f in ("thresholds", "fractions", "tolerance_pct", "budget_ms")
                 if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("needs thresholds, fractions or tolerance_pct (or budget_ms), "
                             f"exactly one (got {len(given)}; set one, e.g. tolerance_pct: 99)")
        return self


class MaxProbConfig(ConfidenceConfig):
    """``maxprob`` (MSDNet): exit when the max softmax ≥ the exit's threshold."""

    name: Literal["maxprob"] = "maxprob"


class EntropyConfig(ConfidenceConfig):
    """``entropy`` (BranchyNet): exit when the normalised entropy ≤ the exit's threshold."""

    name: Literal["entropy"] = "entropy"


class OracleConfig(PolicyConfigBase):
    """``oracle``: the earliest correct exit; with ``budget_ms``, the budgeted LP bound."""

    name: Literal["oracle"] = "oracle"
    budget_ms: float | None = Field(None, gt=0, description="average cost per sample (LP bound)")
    cost_batch: int = Field(1, ge=1, description="batch size the per-sample exit costs are taken at")


class PatienceConfig(PolicyConfigBase):
    """``patience`` (PABEE): exit after ``patience`` unchanged predictions."""

    tunable: ClassVar[dict[str, Tunable]] = {"patience": Tunable(low=1, high=4, integer=True)}
    name: Literal["patience"] = "patience"
    patience: int | None = Field(None, ge=1, description="unchanged predictions to exit")
    tolerance_pct: float | None = Field(None, description="or: the patience keeping τ % of "
                                        "the full model's accuracy on val")


class EENetConfig(PolicyConfigBase):
    """``eenet``: learned scorers and exit assignment under an average cost budget."""

    tunable: ClassVar[dict[str, Tunable]] = {
        "budget_ms": Tunable(low=0.3, high=1.0, per="full_cost_ms")}
    name: Literal["eenet"] = "eenet"
    budget_ms: float = Field(gt=0, description="average cost per sample, ms")
    cost_batch: int = Field(1, ge=1, description="batch size the per-sample exit costs are taken at")
    n_fits: int = Field(3, ge=1, description="fits to keep the best of")
    epochs: int = Field(150, ge=1, description="training epochs per fit")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the first fit")


class PAMEConfig(PolicyConfigBase):
    """``pame``: precision-aware thresholds, then exit placement for the server's batches."""

    tunable: ClassVar[dict[str, Tunable]] = {
        "tolerance_pct": Tunable(low=90.0, high=100.0),
        "tail_tolerance_pct": Tunable(low=0.0, high=50.0)}
    name: Literal["pame"] = "pame"
    tolerance_pct: float = Field(description="τ: keep τ % of the full model's accuracy")
    tail_tolerance_pct: float = Field(5.0, ge=0, description="allowed rise of the worst-case "
                                      "batch latency over no exits, %")


class GatiConfig(PolicyConfigBase):
    """``gati``: a learned selector per exit predicting agreement with the full model."""

    tunable: ClassVar[dict[str, Tunable]] = {
        "selector_threshold": Tunable(low=0.05, high=0.95)}
    name: Literal["gati"] = "gati"
    accuracy_target: float = Field(gt=0, le=1, description="absolute accuracy to hold on val")
    cost_batch: int = Field(1, ge=1, description="batch size the per-sample exit costs are taken at")
    lookup_ms: float = Field(0.0, ge=0, description="extra latency of a hit's lookup")
    selector_threshold: float | None = Field(0.5, gt=0, lt=1, description="hit iff P > this "
                                             "(null: searched on val)")


class DynamicOFAConfig(PolicyConfigBase):
    """``dynamic-ofa``: a runtime manager switching between static levels to hold a target."""

    tunable: ClassVar[dict[str, Tunable]] = {
        "latency_target_ms": Tunable(low=1.0, high=10.0, log=True, per="full_cost_ms"),
        "window": Tunable(low=5, high=100, log=True, integer=True),
        "up_after": Tunable(low=0, high=500, integer=True)}
    name: Literal["dynamic-ofa"] = "dynamic-ofa"
    levels: list[PolicyConfig] = Field(min_length=1, description="operating points, cheapest first")
    latency_target_ms: float = Field(gt=0, description="window latency target")
    accuracy_target: float = Field(gt=0, le=1, description="absolute accuracy; rise while below")
    window: int = Field(20, ge=1, description="requests in the latency window")
    warmup: int = Field(20, ge=0, description="requests skipped after a switch")
    up_after: int = Field(70, ge=0, description="requests at a level before a rise")
    switch_cost_ms: float = Field(0.0, ge=0, description="stall per switch")
    lock: bool = Field(True, description="hold rises after a failed one")
    hold_s: float = Field(5.0, ge=0, description="how long a lock holds")


class FromFileConfig(BaseModel):
    """``from_file``: a policy saved by ``offramp fit -o`` (already fitted: nothing else)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    from_file: str

    @property
    def name(self) -> str:
        return "from_file"


# The registry (policies/registry.py) hands itself over when it is built: this module never
# imports it (no import cycle); entries are looked up when a policy is parsed.
_REGISTRY: dict[str, Any] = {}


def use_registry(registry: dict[str, Any]) -> None:
    """Parse policies against ``registry`` (name -> entry with ``.config``)."""
    global _REGISTRY
    _REGISTRY = registry


def config_name(config: type[PolicyConfigBase]) -> str:
    """The registry key of a config class: its ``name`` default, without a ``:K`` argument."""
    return str(config.model_fields["name"].default).partition(":")[0]


def configs() -> dict[str, type[PolicyConfigBase]]:
    """Every registered policy's config class, by name."""
    return {name: entry.config for name, entry in _REGISTRY.items()}


def _tag(value: Any) -> str | None:
    if isinstance(value, dict):
        if "from_file" in value:
            return "from_file"
        name = value.get("name", "none")
    else:
        name = getattr(value, "name", None)
    return str(name).partition(":")[0] if name is not None else None


PolicyConfig = Any  # the union of every registered config; ``levels`` refers to it by name
_BUILT: dict[str, Any] = {}
_LOCK = threading.Lock()


def _adapters() -> tuple[TypeAdapter, TypeAdapter, dict[str, type[PolicyConfigBase]]]:
    """(policy union, policy-or-from_file union, configs), rebuilt when the registry changes."""
    known = configs()
    with _LOCK:
        if _BUILT.get("names") != tuple(known.items()):
            _build(known)
    return _BUILT["policy"], _BUILT["section"], known


def _build(known: dict[str, type[PolicyConfigBase]]) -> None:
    global PolicyConfig
    members = tuple(Annotated[cls, Tag(name)] for name, cls in known.items())
    PolicyConfig = Annotated[Union[members], Discriminator(_tag)]  # noqa: UP007
    section = Annotated[Union[(Annotated[FromFileConfig, Tag("from_file")], *members)],  # noqa: UP007
                        Discriminator(_tag)]
    # pydantic keeps a field type it has resolved once: set the new union explicitly.
    DynamicOFAConfig.__pydantic_fields__["levels"].annotation = list[PolicyConfig]
    DynamicOFAConfig.model_rebuild(force=True, _types_namespace={"PolicyConfig": PolicyConfig})
    _BUILT.update(names=tuple(known.items()), policy=TypeAdapter(PolicyConfig),
                  section=TypeAdapter(section))


def parse_policy(data: Any, source: str = "policy", prefix: str = "",
                 allow_file: bool = False) -> PolicyConfigBase | FromFileConfig:
    """Validate a policy mapping into its config class; one :class:`InputError` if it is bad.

    ``prefix`` goes before field names in the error (``policy.`` in a study file);
    ``allow_file``: accept ``{from_file: PATH}`` too.
    """
    if isinstance(data, PolicyConfigBase | FromFileConfig):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(source, prefix.rstrip(".") or None, "must be a mapping with a name",
                         "e.g. {name: entropy, tolerance_pct: 99}")
    if "from_file" in data and not allow_file:
        raise InputError(source, prefix + "from_file", "a saved policy is not allowed here",
                         "give a policy by name")
    policy, section, known = _adapters()
    try:
        return (section if allow_file else policy).validate_python(data)
    except ValidationError as err:
        raise _explain(err, data, source, prefix, known) from None


def policy_config(**fields: Any) -> PolicyConfigBase:
    """``parse_policy`` for keyword arguments: ``policy_config(name="entropy", tolerance_pct=99)``."""
    return parse_policy(fields)


def _explain(err: ValidationError, data: dict, source: str, prefix: str,
             known: dict[str, type[PolicyConfigBase]]) -> InputError:
    """The first problem (misplaced fields sorted by name) as one InputError."""
    errors = err.errors()
    extra = sorted((e for e in errors if e["type"] == "extra_forbidden"),
                   key=lambda e: str(e["loc"][-1]))
    first = extra[0] if extra else errors[0]
    loc = list(first["loc"])
    # Drop the union tags pydantic puts in the location (at the top and after a level index).
    parts, owner = [], str(data.get("name", "none"))
    for i, part in enumerate(loc):
        if isinstance(part, str) and (i == 0 or isinstance(loc[i - 1], int)) and (
                part in known or part == "from_file"):
            owner = part
            continue
        parts.append(str(part))
    field = prefix + ".".join(parts) if parts else prefix.rstrip(".") or "name"
    kind, msg = first["type"], first["msg"].removeprefix("Value error, ")
    if kind == "union_tag_invalid":
        bad = first.get("input", {})
        name = bad.get("name") if isinstance(bad, dict) else bad
        where = prefix + ".".join([*parts, "name"])
        if isinstance(bad, dict) and "from_file" in bad:
            return InputError(source, where, "a saved policy (from_file) cannot be used here",
                              "give the policy by name and its fields")
        return InputError(source, where, f"unknown policy {name!r}",
                          f"use one of {sorted(known)} (static as static:K)")
    if kind == "union_tag_not_found":
        return InputError(source, field, "needs a name", f"use one of {sorted(known)}")
    last = parts[-1] if parts else "name"
    if kind == "extra_forbidden":
        what = "fitting options" if owner in ("none", "static", "oracle") and last in _FIT else last
        if owner == "from_file":
            return InputError(source, field, f"from_file takes no {last} (a saved policy is "
                              "already fitted)", "remove it, or drop from_file")
        if last in _FIT or owner not in known:
            return InputError(source, field, f"{owner} takes no {what}", "remove it")
        own = sorted(f for f in known[owner].model_fields if f != "name")
        return InputError(source, field, f"{owner} takes no {last} (an extra field; its fields: "
                          f"{', '.join(own) or 'none'})", "remove it or fix its spelling")
    if kind == "missing":
        return InputError(source, field, f"{owner} needs {last}",
                          f"set {prefix or 'policy.'}{'.'.join(parts)}")
    if kind == "literal_error" and last == "name":
        return InputError(source, field, f"{owner} takes no ':' argument", f"write {owner}")
    more = f" ({len(errors) - 1} more)" if len(errors) > 1 else ""
    return InputError(source, field, f"{owner}: {msg}{more}", "see docs/policies.md for each "
                      "policy's fields")


_FIT = {"thresholds", "fractions", "tolerance_pct", "budget_ms", "cost_batch", "patience",
        "n_fits", "epochs", "seed", "tail_tolerance_pct", "accuracy_target", "lookup_ms",
        "selector_threshold", "levels", "latency_target_ms", "window", "warmup", "up_after",
        "switch_cost_ms", "lock", "hold_s"}
