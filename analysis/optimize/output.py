"""What ``optimize`` writes: the winner as a ready study (``best.yaml``), every screened
trial (``trials.parquet``), the whole result (``optimize.json``, strict JSON), the front
(``front.png``) and one HTML page (``report.html``), each atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from offramp.analysis.optimize.baselines import ratio
from offramp.analysis.optimize.evaluate import Outcome
from offramp.analysis.optimize.goal import Objective
from offramp.analysis.optimize.run import Result
from offramp.analysis.study.config import parse_config
from offramp.analysis.study.overrides import apply_fields
from offramp.common.atomic import atomic_path

NO_EXITS = "no exits (best batching)"
CLOSE = 0.002  # a constraint within this of its bound binds


def value_label(result: Result) -> str:
    """What the objective value is, with its unit."""
    g = result.goal
    if g.objective is Objective.LOAD:
        return f"capacity at p{g.attainment * 100:g} <= {g.slo_ms:g} ms (req/s)"
    if g.objective is Objective.REPLICAS:
        return f"replicas for {g.load_rps:g} req/s"
    return f"val accuracy at {g.load_rps:g} req/s"


def describe(point: dict[str, Any]) -> str:
    """A candidate in one line: policy and its fields, exit mode, batching."""
    if not point:
        return "as given"
    pol = ", ".join(f"{k.split('.', 1)[1]}={_short(v)}" for k, v in point.items()
                    if k.startswith("policy.") and k != "policy.name")
    name = point.get("policy.name", "?") + (f" ({pol})" if pol else "")
    srv = ", ".join(f"{k.split('.', 1)[1]}={_short(v)}" for k, v in point.items()
                    if k.startswith("server."))
    return f"{name}; {srv}"


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def why(result: Result) -> list[str]:
    """Why the winner wins: the constraints that bind, where it runs at its operating point,
    what it gains over no exits."""
    w, g = result.winner, result.goal
    lines = []
    if g.min_relative_accuracy is not None and w.val_relative_accuracy is not None and \
            w.val_relative_accuracy - g.min_relative_accuracy < CLOSE:
        lines.append(f"the accuracy floor binds: val relative accuracy {w.val_relative_accuracy:.4f}"
                     f" vs >= {g.min_relative_accuracy:g} (exiting more would break it)")
    if g.budget_ms is not None and w.cost_ms is not None and \
            (g.budget_ms - w.cost_ms) / g.budget_ms < CLOSE * 5:
        lines.append(f"the compute budget binds: {w.cost_ms:.4g} vs <= {g.budget_ms:g} ms/sample")
    d = w.detail
    if d:
        lines.append(f"at {d['rate_rps']:.4g} req/s on {w.replicas} replica(s): p99 "
                     f"{d['latency_p99_ms']:.4g} ms (SLO {g.slo_ms:g}), p50 "
                     f"{d['latency_p50_ms']:.4g} ms, mean first-stage batch "
                     f"{d['batch_size_stage_0']:.3g}, busy {d['utilisation']:.0%}")
    lines.append("exit fractions on test: " + ", ".join(f"{f:.3f}" for f in w.exit_fractions))
    base = result.baselines.get(NO_EXITS)
    gain = ratio(w.value, base.value) if base is not None and g.objective is Objective.LOAD \
        else None
    if gain is not None:
        lines.append(f"{gain:.2f}x the capacity of no exits at its best batching "
                     f"({base.value:.4g} req/s: {describe(base.point)})")
    return lines


def rows(result: Result) -> list[dict[str, Any]]:
    """The table: the winner, then each baseline, then the other finalists."""
    entries = [("optimizer's choice", result.winner), *result.baselines.items()]
    entries += [(f"finalist {i + 2}", o) for i, o in enumerate(
        o for o in result.finalists if o is not result.winner)]
    base = result.baselines.get(NO_EXITS)
    out = []
    for label, o in entries:
        ci = (o.detail or {}).get("test_relative_accuracy_ci95")
        config = describe(o.point) + ("" if o.feasible else f" — refused: {o.reason}")
        out.append({"label": label, "config": config, "feasible": o.feasible,
                    "value": o.value if o.feasible else None, "value_ci95": o.capacity_ci95_rps
                    if result.goal.objective is Objective.LOAD else None,
                    "vs_no_exits": ratio(o.value, base.value) if o.feasible and base is not None
                    and result.goal.objective is Objective.LOAD else None,
                    "test_relative_accuracy": o.test_relative_accuracy,
                    "test_relative_accuracy_ci95": ci, "cost_ms": o.cost_ms,
                    "replicas": o.replicas,
                    "p99_ms": (o.detail or {}).get("latency_p99_ms"),
                    "cost_per_million": result.goal.cost_per_million(
                        o.replicas, (o.detail or {}).get("rate_rps") or 0.0),
                    "reason": o.reason})
    return out


def pareto(trials: list[Outcome], maximize: bool) -> list[int]:
    """Indices of the feasible trials no other beats on both test relative accuracy and the
    objective."""
    pts = [(i, o.test_relative_accuracy, o.value if maximize else -o.value)
           for i, o in enumerate(trials) if o.feasible and o.test_relative_accuracy is not None]
    return [i for i, a, v in pts if not any(
        (a2 >= a and v2 >= v) and (a2 > a or v2 > v) for _, a2, v2 in pts)]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write(result: Result, folder: Path, command: str) -> dict[str, Path]:
    """Write every output into ``folder``; returns them by name."""
    from offramp.analysis.report.plots import plot_front
    from offramp.analysis.report.search_pages import optimize_report

    folder = Path(folder)
    front = set(pareto(result.trials, result.goal.objective.maximize))
    table = pd.DataFrame([{**o.point, "feasible": o.feasible, "value": o.value,
                           "reason": o.reason, "val_accuracy": o.val_accuracy,
                           "val_relative_accuracy": o.val_relative_accuracy,
                           "test_accuracy": o.test_accuracy,
                           "test_relative_accuracy": o.test_relative_accuracy,
                           "cost_ms": o.cost_ms, "capacity_rps": o.capacity_rps,
                           "replicas": o.replicas, "sim_requests": o.sim_requests,
                           "seconds": o.seconds, "front": i in front}
                          for i, o in enumerate(result.trials)])
    paths = {name: folder / name for name in ("trials.parquet", "optimize.json", "best.yaml",
                                              "front.png", "report.html")}
    with atomic_path(paths["trials.parquet"]) as tmp:
        table.to_parquet(tmp, index=False)
    doc = _clean({"study": result.study, "set": result.sets, "command": command,
                  "goal": result.goal.as_dict(),
                  "goal_line": result.goal.describe(),
                  "objective_label": value_label(result),
                  "space": result.space.model_dump(mode="json"),
                  "settings": result.settings.__dict__, "winner": result.winner.as_dict(),
                  "why": why(result), "table": rows(result),
                  "finalists": [o.as_dict() for o in result.finalists],
                  "baselines": {k: o.as_dict() for k, o in result.baselines.items()},
                  "front": [result.trials[i].as_dict() for i in sorted(front)],
                  "simulated_requests": result.spent, "seconds": result.seconds,
                  "trials": len(result.trials)})
    with atomic_path(paths["optimize.json"]) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    _write_best(result, paths["best.yaml"], command)
    marks = {}
    for r, o in zip(rows(result), [result.winner, *result.baselines.values()], strict=False):
        ci = r["test_relative_accuracy_ci95"]
        if o.feasible and ci:
            marks[r["label"]] = {"x": o.test_relative_accuracy, "x_lo": ci[0], "x_hi": ci[1],
                                 "y": o.value, "y_ci": r["value_ci95"]}
    plot_front([{"policy": o.point.get("policy.name"), "x": o.test_relative_accuracy,
                 "y": o.value, "feasible": o.feasible, "front": i in front}
                for i, o in enumerate(result.trials)], marks, value_label(result),
               paths["front.png"])
    with atomic_path(paths["report.html"]) as tmp:
        tmp.write_text(optimize_report(folder, doc))
    return paths


def _write_best(result: Result, path: Path, command: str) -> None:
    """The study with the winner's fields: ``simulate``, ``capacity`` and ``validate`` take it
    as is."""
    fields = dict(result.winner.point)
    rate = (result.winner.detail or {}).get("rate_rps")
    if rate and parse_config(result.base, result.named).workload.kind in ("poisson", "gamma"):
        fields["workload.rate_rps"] = round(float(rate), 4)  # simulate it where it was judged
    fields["server.replicas"] = result.winner.replicas
    fields["slo.latency_ms"] = result.goal.slo_ms
    data = apply_fields(result.base, fields, result.named)
    study_dir = Path(result.study).parent.resolve()
    for section in ("trace", "profile"):  # paths relative to the study stay valid
        p = (data.get(section) or {}).get("path")
        if p and (study_dir / p).exists():
            data[section]["path"] = str((study_dir / p).resolve())
    head = (f"# offramp optimize: {result.goal.describe()}\n# winner: {describe(result.winner.point)}"
            f" -> {value_label(result)} {result.winner.value:.5g}\n# {command}\n")
    with atomic_path(path) as tmp:
        tmp.write_text(head + yaml.safe_dump(data, sort_keys=False))
