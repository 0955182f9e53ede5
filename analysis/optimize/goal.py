"""What an optimization asks for: one objective, the SLO, and the constraints a candidate must
keep (checked on val; reported on test)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from offramp.common.errors import InputError


class Objective(StrEnum):
    """``load``: maximize the capacity at the SLO; ``replicas``: minimize the replicas that hold
    the SLO at ``load_rps``; ``accuracy``: maximize accuracy with the SLO held at ``load_rps``."""

    LOAD = "load"
    REPLICAS = "replicas"
    ACCURACY = "accuracy"

    @property
    def maximize(self) -> bool:
        """Whether a larger objective value is better."""
        return self is not Objective.REPLICAS

    @property
    def needs_load(self) -> bool:
        """Whether the objective is judged at a given load (``load_rps``)."""
        return self is not Objective.LOAD


@dataclass(frozen=True)
class Goal:
    """The objective, the p99 (``attainment``) SLO, and the constraints."""

    objective: Objective
    slo_ms: float
    attainment: float = 0.99
    load_rps: float | None = None
    min_relative_accuracy: float | None = None
    min_accuracy: float | None = None
    budget_ms: float | None = None
    max_replicas: int = 1
    cost_per_replica_hour: float | None = None

    def __post_init__(self) -> None:
        if not (self.slo_ms > 0 and math.isfinite(self.slo_ms)):
            raise InputError("optimize", "--slo-p99-ms", f"must be > 0, got {self.slo_ms}",
                             "e.g. --slo-p99-ms 25")
        if not 0 < self.attainment < 1:
            raise InputError("optimize", "--attainment", f"must be in (0, 1), got "
                             f"{self.attainment}", "e.g. 0.99 for p99")
        if self.objective.needs_load and not (self.load_rps or 0) > 0:
            verb = "maximize" if self.objective.maximize else "minimize"
            raise InputError("optimize", "--load-rps", f"--{verb} {self.objective.value} is "
                             "judged at a load", "give --load-rps L")
        if not self.objective.needs_load and self.load_rps is not None:
            raise InputError("optimize", "--load-rps", "--maximize load searches the load",
                             "drop --load-rps")
        for name in ("min_relative_accuracy", "min_accuracy"):
            v = getattr(self, name)
            if v is not None and not 0 < v <= 1:
                raise InputError("optimize", "--" + name.replace("_", "-"), f"must be in (0, 1], "
                                 f"got {v}", "e.g. 0.99")
        if self.budget_ms is not None and not self.budget_ms > 0:
            raise InputError("optimize", "--budget-ms", f"must be > 0, got {self.budget_ms}",
                             "the average per-sample compute in ms, e.g. 0.8")
        if self.max_replicas < 1:
            raise InputError("optimize", "--max-replicas", f"must be >= 1, got "
                             f"{self.max_replicas}", "e.g. --max-replicas 8")

    def violations(self, relative_accuracy: float, accuracy: float, cost_ms: float
                   ) -> dict[str, float]:
        """How far a candidate (on val) is outside each accuracy and budget constraint (> 0:
        violated; 0: kept), by constraint name."""
        out = {}
        if self.min_relative_accuracy is not None:
            out["min_relative_accuracy"] = max(0.0, self.min_relative_accuracy - relative_accuracy)
        if self.min_accuracy is not None:
            out["min_accuracy"] = max(0.0, self.min_accuracy - accuracy)
        if self.budget_ms is not None:
            out["budget_ms"] = max(0.0, cost_ms - self.budget_ms) / self.budget_ms
        return out

    def cost_per_million(self, replicas: int, rate_rps: float) -> float | None:
        """Cost of a million requests served at ``rate_rps`` on ``replicas`` (None: no price)."""
        from offramp.analysis.study.cost import cost_per_million

        return cost_per_million(self.cost_per_replica_hour, replicas, rate_rps)

    def describe(self) -> str:
        """One line: the objective and every constraint."""
        what = {Objective.LOAD: "maximize the load", Objective.REPLICAS:
                f"minimize replicas at {self.load_rps:g} req/s" if self.load_rps else "",
                Objective.ACCURACY: f"maximize accuracy at {self.load_rps:g} req/s"
                if self.load_rps else ""}[self.objective]
        parts = [f"{what} with p{self.attainment * 100:g} <= {self.slo_ms:g} ms"]
        if self.min_relative_accuracy is not None:
            parts.append(f"relative accuracy >= {self.min_relative_accuracy:g}")
        if self.min_accuracy is not None:
            parts.append(f"accuracy >= {self.min_accuracy:g}")
        if self.budget_ms is not None:
            parts.append(f"average compute <= {self.budget_ms:g} ms/sample")
        if self.objective is Objective.REPLICAS:
            parts.append(f"replicas <= {self.max_replicas}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "objective": self.objective.value}
