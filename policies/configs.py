"""One frozen config class per policy: its own fields, units, bounds and tunable ranges.

A ``policy`` section (or a Python dict) is parsed by :func:`offramp.policies.parse.parse_policy`
into the class its ``name`` selects (``static:K`` selects :class:`StaticConfig`).

``tunable`` on each class names the parameters a search may vary and their ranges
(:class:`Tunable`); a range ``per`` the full model's cost is multiplied by it first.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    field_validator,
    model_validator,
)


class Tunable(BaseModel):
    """A search range for one parameter: [low, high], log-spaced or not, integer or not;
    ``per``: the range is a multiple of this quantity (e.g. the full model's cost in ms)."""

    model_config = ConfigDict(frozen=True)
    low: float
    high: float
    log: bool = False
    integer: bool = False
    per: Literal["", "full_cost_ms"] = ""

    @model_validator(mode="after")
    def _a_range(self) -> Tunable:
        if not self.low <= self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        if self.log and not self.low > 0:
            raise ValueError(f"a log-spaced range needs low > 0, got {self.low:g}")
        return self


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
    exits: list[int] | None = Field(None, min_length=1, description="early exits consulted "
                                    "(0..K-2; default all): the others' heads are skipped")

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
    n_fits: int = Field(10, ge=1, description="fits to keep the best of (the paper's 10)")
    epochs: int = Field(1000, ge=1, description="training epochs per fit, at most")
    lr: float = Field(3e-5, gt=0, description="Adam's learning rate (the paper's 3e-5)")
    hidden_scale: float | None = Field(None, gt=0, description="assignment heads' hidden width "
                                       "per input (unset: the paper's, 2 for a transformer "
                                       "model, 0.5 otherwise)")
    decoupled_weight_decay: bool = Field(False, description="AdamW instead of Adam's L2 (the "
                                         "CPU-tuned variant: with lr 1e-2, 150 epochs)")
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
    selector_threshold: float | None = Field(None, gt=0, lt=1, description="hit iff P > this "
                                             "(null, the default: searched on val)")


class DynamicOFAConfig(PolicyConfigBase):
    """``dynamic-ofa``: a runtime manager switching between static levels to hold a target."""

    tunable: ClassVar[dict[str, Tunable]] = {
        "latency_target_ms": Tunable(low=1.0, high=10.0, log=True, per="full_cost_ms"),
        "window": Tunable(low=5, high=100, log=True, integer=True),
        "up_after": Tunable(low=0, high=500, integer=True)}
    name: Literal["dynamic-ofa"] = "dynamic-ofa"
    levels: list[SerializeAsAny[PolicyConfigBase]] = Field(
        min_length=1, description="operating points, cheapest first (each a policy config)")
    latency_target_ms: float = Field(gt=0, description="window latency target")
    accuracy_target: float = Field(gt=0, le=1, description="absolute accuracy; rise while below")
    unit: Literal["requests", "batches", "seconds"] = Field(
        "requests", description="what window, warmup and up_after count: finished requests, "
        "dispatched batches or simulated seconds")
    window: float = Field(20, gt=0, description="units in the latency window")
    warmup: float = Field(20, ge=0, description="units skipped after a switch")
    up_after: float = Field(70, ge=0, description="units at a level before a rise")
    switch_cost_ms: float = Field(0.0, ge=0, description="stall per switch")
    lock: bool = Field(True, description="hold rises after a failed one")
    hold_s: float = Field(5.0, ge=0, description="how long a lock holds")

    @model_validator(mode="after")
    def _whole_counts(self) -> DynamicOFAConfig:
        if self.unit != "seconds":
            bad = [f for f in ("window", "warmup", "up_after") if getattr(self, f) % 1]
            if bad:
                raise ValueError(f"{', '.join(bad)} count {self.unit}: give whole numbers "
                                 "(or unit: seconds)")
        return self

    @field_validator("levels", mode="before")
    @classmethod
    def _parse_levels(cls, value: Any) -> Any:
        # parse_policy parses the levels first (errors naming policy.levels.N); this covers a
        # config built directly in Python.
        if isinstance(value, list):
            from .parse import parse_policy  # parse imports this module
            return [parse_policy(v, prefix=f"levels.{i}.") for i, v in enumerate(value)]
        return value


class FromFileConfig(BaseModel):
    """``from_file``: a policy saved by ``offramp fit -o`` (already fitted: nothing else)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    from_file: str

    @property
    def name(self) -> str:
        return "from_file"
