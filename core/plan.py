"""The validation plan: what ``offramp validate`` (and ``offramp profile calibrate``) asks the
real side to serve, as one frozen, typed, versioned record that the planning side writes and
the real side (here or on a bare GPU box) and the comparison read. Standard library only.

Every field the real side reads is here with its default; ``plan.json`` is its JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .modes import Discipline, ExitMode

PLAN_VERSION = 2  # 1: the untyped plans written before 2026-12-06 (read the same way)
RULES = ("none", "maxprob", "entropy", "table")


class PlanError(ValueError):
    """A plan file that does not hold a valid plan; ``field`` names what is wrong."""

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"{field_name}: {problem}")
        self.field, self.problem = field_name, problem


@dataclass(frozen=True)
class ExitRule:
    """How the real loop takes the policy's decisions: thresholds on the head outputs
    (``maxprob``, ``entropy``), a per-sample exit table (``table``), or none."""

    kind: str
    thresholds: tuple[float, ...]
    active: tuple[bool, ...]


@dataclass(frozen=True)
class ValidationPlan:
    model: str                       # model id (a shipped model, or the factory's)
    trace: str                       # the trace file the policy was fitted on
    policy: dict[str, Any]           # the fitted policy's parameters (JSON)
    rule: ExitRule
    modes: tuple[ExitMode, ...]
    loads: tuple[dict[str, float], ...]  # {"utilisation": u} or {"rate_rps": r}
    rate0_rps: float                 # where the busy-fraction calibration starts
    device: str = "cpu"
    precision: str = "fp32"
    max_batch: int = 32
    max_wait_ms: float = 2.0
    discipline: Discipline = Discipline.DEEPEST_FIRST  # rebatch: which ready stage runs next
    stage_max_wait_ms: float | None = None  # rebatch: survivors' wait (None: max_wait_ms)
    repeats: int = 5
    requests: int = 20_000
    calib_requests: int = 1500
    served_requests: int = 2000
    served_seconds: float = 10.0
    seed: int = 0
    warmup_fraction: float = 0.1
    measure_profile: bool = True     # measure a profile in the loop first (else real/profile.json)
    profile_batches: tuple[int, ...] = ()
    profile_runs: int = 30
    core: int | None = None          # CPU core the real side pins to (None: the last allowed)
    checkpoint: str | None = None    # trained weights (None: the shipped checkpoint)
    seq_len: int = 64                # tokens per sample (rt-minilm6)
    model_factory: str | None = None
    model_args: tuple[str, ...] = ()
    command: str = ""
    version: int = field(default=PLAN_VERSION)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["modes"] = [m.value for m in self.modes]
        for name, value in out.items():
            if isinstance(value, tuple):
                out[name] = list(value)
        out["rule"] = {k: list(v) if isinstance(v, tuple) else v for k, v in out["rule"].items()}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def same_plan(self, other: ValidationPlan) -> bool:
        """Whether two plans ask for the same runs (the command line aside)."""
        a, b = self.to_dict(), other.to_dict()
        a.pop("command")
        b.pop("command")
        return a == b

    @classmethod
    def from_dict(cls, data: Any) -> ValidationPlan:
        if not isinstance(data, dict):
            raise PlanError("plan", "must be a mapping")
        version = data.get("version", 1)
        if not isinstance(version, int) or version > PLAN_VERSION:
            raise PlanError("version", f"{version!r} is newer than this offramp reads "
                            f"({PLAN_VERSION}): update offramp")
        known = {f.name for f in fields(cls)}
        stray = sorted(set(data) - known)
        if stray:
            raise PlanError(stray[0], "is not a plan field")
        missing = [name for name in REQUIRED if name not in data]
        if missing:
            raise PlanError(missing[0], "missing")
        values = {k: _check(k, v) for k, v in data.items() if k != "version"}
        return cls(**values, version=PLAN_VERSION)

    @classmethod
    def from_json(cls, text: str) -> ValidationPlan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError("plan", f"not JSON ({exc})") from None
        return cls.from_dict(data)


REQUIRED = ("model", "trace", "policy", "rule", "modes", "loads", "rate0_rps")


def _number(name: str, v: Any, kind: type = float, low: float | None = None) -> Any:
    ok = isinstance(v, int | float) and not isinstance(v, bool) if kind is float else \
        isinstance(v, int) and not isinstance(v, bool)
    if not ok or (low is not None and v < low):
        bound = f" >= {low:g}" if low is not None else ""
        raise PlanError(name, f"must be {'an integer' if kind is int else 'a number'}{bound}, "
                        f"got {v!r}")
    return kind(v)


def _check(name: str, v: Any) -> Any:
    """One field's value, type-checked (and converted: lists to tuples, modes to ExitMode)."""
    if name in ("model", "trace", "device", "precision", "command"):
        if not isinstance(v, str):
            raise PlanError(name, f"must be a string, got {v!r}")
        return v
    if name in ("checkpoint", "model_factory"):
        if v is not None and not isinstance(v, str):
            raise PlanError(name, f"must be a string or null, got {v!r}")
        return v
    if name == "core":
        return None if v is None else _number(name, v, int, 0)
    if name in ("max_batch", "repeats", "requests", "calib_requests", "profile_runs", "seq_len"):
        return _number(name, v, int, 1)
    if name in ("served_requests", "seed"):
        return _number(name, v, int, 0)
    if name in ("max_wait_ms", "served_seconds", "rate0_rps"):
        return _number(name, v, float, 0)
    if name == "warmup_fraction":
        v = _number(name, v, float, 0)
        if v >= 1:
            raise PlanError(name, f"must be below 1, got {v}")
        return v
    if name == "measure_profile":
        if not isinstance(v, bool):
            raise PlanError(name, f"must be true or false, got {v!r}")
        return v
    if name == "policy":
        if not isinstance(v, dict):
            raise PlanError(name, "must be a mapping")
        return v
    if name == "modes":
        served = [m.value for m in ExitMode if m.real_loop_serves]
        if not isinstance(v, list) or not v or any(m not in served for m in v):
            raise PlanError(name, f"must be exit modes ({', '.join(served)}), got {v!r}")
        return tuple(ExitMode(m) for m in v)
    if name == "discipline":
        if v not in [d.value for d in Discipline]:
            raise PlanError(name, f"must be one of {', '.join(d.value for d in Discipline)}, "
                            f"got {v!r}")
        return Discipline(v)
    if name == "stage_max_wait_ms":
        return None if v is None else _number(name, v, float, 0)
    if name == "loads":
        if not isinstance(v, list) or not v or not all(
                isinstance(x, dict) and len(x) == 1 and set(x) <= {"utilisation", "rate_rps"}
                for x in v):
            raise PlanError(name, "must be [{utilisation: u} or {rate_rps: r}, ...]")
        return tuple({k: _number(name, x, float, 0) for k, x in load.items()} for load in v)
    if name in ("profile_batches", "model_args"):
        if not isinstance(v, list):
            raise PlanError(name, "must be a list")
        return tuple(_number(name, x, int, 1) for x in v) if name == "profile_batches" \
            else tuple(str(x) for x in v)
    if name == "rule":
        if not isinstance(v, dict) or v.get("kind") not in RULES:
            raise PlanError(name, f"must be a mapping with kind one of {', '.join(RULES)}")
        return ExitRule(v["kind"], tuple(float(t) for t in v.get("thresholds", [])),
                        tuple(bool(a) for a in v.get("active", [])))
    raise PlanError(name, "is not a plan field")
