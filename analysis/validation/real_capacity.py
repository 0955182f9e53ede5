"""The capacity at a latency SLO measured on the real serving loop, beside the simulator's.

The study's configuration is served for real (the validate machinery: the model, the test
split's inputs, Poisson streams of the trace's samples) at a few rates around the predicted
capacity (default 0.8, 0.9, 1.0, 1.1, 1.2 ×), each ``repeats`` times. Per repeat, the measured
capacity is where the fraction of requests within the SLO crosses ``attainment``, interpolated
linearly in the rate between the last rate that held and the first that failed; the result is
the median over repeats and their range (the real spread). A repeat that holds at every rate
is censored at the highest (``>=``); one that fails at every rate at the lowest (``<``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from offramp.analysis.study.config import StudyConfig
from offramp.analysis.validation.io import read_real_side, read_run
from offramp.analysis.validation.prepare import prepare
from offramp.common.atomic import atomic_path
from offramp.traces.format import ExitTrace

FACTORS = (0.8, 0.9, 1.0, 1.1, 1.2)


def measure_capacity(cfg: StudyConfig, base: Path | None, out: Path, trace: ExitTrace,
                     predicted_rps: float, slo_ms: float, attainment: float = 0.99,
                     factors: Sequence[float] = FACTORS, repeats: int = 3,
                     requests: int = 6000, device: str = "cpu", core: int | None = None,
                     log: Callable[[str], None] = print, checkpoint: str | None = None
                     ) -> dict[str, Any]:
    """Serve the study for real around ``predicted_rps`` and measure its capacity; writes the
    validate folder ``out`` (resumable) and ``out/capacity.json``. ``checkpoint``: the real
    model's weights (default: the shipped ones)."""
    from offramp.profiling.validate_real import run_plan

    rates = [round(f * predicted_rps, 3) for f in factors]
    prepare(cfg, base, out, device, [cfg.server.exit_mode.value], [{"rate_rps": r} for r in rates],
            repeats, requests, served_requests=0, core=core,
            profile_given=Path(cfg.profile.path) if cfg.profile.path else None,
            checkpoint=checkpoint)
    run_plan(out, log=log)
    plan, manifest = read_real_side(out)
    got: dict[int, dict[float, float]] = {}
    p99: dict[int, dict[float, float]] = {}
    for run in manifest["runs"]:
        data = read_run(out / "real" / run["file"], trace)
        rate = float(manifest["streams"][run["key"]]["rate_rps"])
        keep = np.arange(data["arrival"].size) >= int(plan.warmup_fraction * data["arrival"].size)
        lat = (data["finish"][keep] - data["arrival"][keep]) * 1000.0
        got.setdefault(run["repeat"], {})[rate] = float(np.mean(lat <= slo_ms))
        p99.setdefault(run["repeat"], {})[rate] = float(np.percentile(lat, 99))
    per = [crossing(got[r], attainment) for r in sorted(got)]
    values = [v for v, _ in per]
    doc = {"rates_rps": rates, "slo_ms": slo_ms, "attainment": attainment,
           "predicted_rps": predicted_rps, "requests": requests, "repeats": repeats,
           "attained": {str(r): got[r] for r in sorted(got)},
           "p99_ms": {str(r): p99[r] for r in sorted(p99)},
           "per_repeat": [{"capacity_rps": v, "censored": c} for v, c in per],
           "capacity_rps": float(np.median(values)), "spread_rps": [min(values), max(values)],
           "machine": manifest.get("machine")}
    with atomic_path(out / "capacity.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def crossing(attained: dict[float, float], target: float) -> tuple[float, str]:
    """Where the attainment (by rate) crosses ``target``: linear between the last rate that
    held and the first that failed above it; ("", ">=", "<") says whether it is censored."""
    rates = sorted(attained)
    held = [r for r in rates if attained[r] >= target]
    if not held:
        return rates[0], "<"
    failed = [r for r in rates if r > held[-1] and attained[r] < target]
    if not failed:
        return rates[-1], ">="
    lo, hi = held[-1], failed[0]
    a, b = attained[lo], attained[hi]
    return lo + (hi - lo) * (a - target) / (a - b), ""
