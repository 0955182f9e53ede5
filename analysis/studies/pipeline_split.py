"""E3's pipeline split for a study: the reach of each segment under the study's fitted policy
(on val) and its per-sample cost at a full batch on the study's stage costs, then
:func:`offramp.sim.pipeline.choose_split` for each GPU count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from offramp.analysis.study.config import StudyConfig
from offramp.analysis.study.resolve import (
    build_service,
    fit_policy,
    load_study_profile,
    load_study_trace,
)
from offramp.common.errors import InputError
from offramp.core.modes import StageKind
from offramp.sim.pipeline import Split, choose_split


def segment_loads(cfg: StudyConfig, base: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(reach of each segment on val, ms per sample of each segment with its consulted exit's
    head and decision at ``max_batch``)."""
    trace = load_study_trace(cfg, base)
    profile = load_study_profile(cfg, trace, base)
    if profile is None:
        raise InputError("profile", "kind", "an analytic service has no per-segment costs",
                         "split a study with a latency profile")
    policy = fit_policy(cfg, trace, profile, base)
    svc = build_service(cfg, trace, profile)
    n, b = trace.n_exits, cfg.server.max_batch
    exits = policy.exit_index(trace, trace.indices("val"))
    reach = np.array([(exits >= k).mean() for k in range(n)])
    active = policy.active_exits(n)
    cost = []
    for k in range(n):
        kinds = [StageKind.SEGMENT] + ([StageKind.HEAD] if active[k] else [])
        if active[k] and k < n - 1:  # the last exit takes no decision
            kinds.append(StageKind.CHECK)
        cost.append(sum(svc.base[svc.slot(kind, k)][b] for kind in kinds
                        if kind not in svc.skip))
    return reach, 1000.0 * np.array(cost) / b


def pipeline_splits(cfg: StudyConfig, base: Path | None, gpus: list[int]
                    ) -> list[dict[str, Any]]:
    """The chosen split for each GPU count, as rows (GPUs, the split, its bound, the
    ``--set`` that serves it)."""
    reach, per_sample = segment_loads(cfg, base)
    rows = []
    for count in gpus:
        split: Split = choose_split(reach.tolist(), per_sample.tolist(), count)
        flow = ", ".join(f"{{segments: {list(g)}, replicas: {r}}}"
                         for g, r in zip(split.groups, split.replicas, strict=True))
        rows.append({"gpus": count, "groups": [list(g) for g in split.groups],
                     "replicas": list(split.replicas),
                     "work_ms": [round(w, 4) for w in split.work_ms],
                     "bound_rps": split.bound_rps,
                     "set": f"server.pipeline=[{flow}]"})
    return rows
