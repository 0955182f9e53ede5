"""Synthetic latency profiles, for unit tests only (labelled ``synthetic`` in their metadata)."""

from __future__ import annotations

from .format import LatencyProfile


def synthetic_profile(n_exits: int = 4, batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64),
                      model_id: str = "synthetic-net", segment_ms: float = 1.0,
                      per_sample_ms: float = 0.02, spread: float = 0.1,
                      loop_stages: bool = False, served_costs: bool = False) -> LatencyProfile:
    """An affine-in-batch-size profile: stage(b) = fixed + per_sample * b; tests only.

    ``loop_stages`` adds the serving loop's exit ``check`` and ``handoff`` rows, a wake-up
    table, a per-batch tail and a stage-noise correlation. ``served_costs`` adds a served-cost
    table (:mod:`offramp.profiling.served`): each stage's p50 and σ 0.2 and factors that grow
    with the idle time before a batch.
    """
    rows = []

    def row(kind: str, k: int, b: int, p50: float) -> dict:
        return {"kind": kind, "k": k, "batch": b, "p50_ms": p50, "mean_ms": p50 * (1 + spread / 4),
                "p99_ms": p50 * (1 + spread), "std_ms": p50 * spread / 3, "runs": 100}

    for b in batches:
        for k in range(n_exits):
            rows.append(row("segment", k, b, segment_ms + per_sample_ms * b))
            rows.append(row("head", k, b, 0.05 * segment_ms + 0.001 * b))
            if k < n_exits - 1:
                rows.append(row("compact", k, b, 0.02 * segment_ms + 0.0005 * b))
                if loop_stages:
                    rows.append(row("check", k, b, 0.03 * segment_ms + 0.0002 * b))
                    rows.append(row("handoff", k, b, 0.01 * segment_ms + 0.0004 * b))
        rows.append(row("overhead", 0, b, 0.1 * segment_ms))
    meta = {"model_id": model_id, "n_exits": n_exits, "device": "none (synthetic)",
            "backend": "synthetic", "precision": "n/a", "input_shape": [],
            "software": {}, "date": "n/a", "produced_by": {"command": "synthetic_profile()"},
            "synthetic": True}
    if loop_stages:  # a wake-up cost after idle spells (used with costs in_loop)
        meta["wake_ms"] = {"batch": [1, max(batches)], "idle_ms": [1.0, 5.0, 20.0],
                           "extra_ms": [[0.1, 0.3, 0.5], [0.2, 0.8, 1.0]]}
        # ... a per-batch tail after the last stage, and stage noise that hangs together.
        meta["batch_tail_ms"] = {"batch": [1, max(batches)], "ms": [0.05, 0.15]}
        meta["stage_noise_corr"] = {"within": 0.5, "across": 0.8}
    if served_costs:
        from offramp.core.modes import StageKind

        from .served import IDLE_EDGES_MS

        stages: dict[str, list] = {}
        for r in rows:
            stages.setdefault(f"{r['kind']} {r['k']}", []).append([r["batch"], r["p50_ms"], 0.2, 100])
        meta["served_costs"] = {
            "idle_edges_ms": list(IDLE_EDGES_MS),
            "factor": {kind: {"idle": [1.0 + 0.1 * i for i in range(len(IDLE_EDGES_MS) + 1)]}
                       for kind in StageKind},
            "stages": {key: sorted(v) for key, v in stages.items()},
            "noise_corr": {"within": 0.3, "across": 0.6},
            "batch_tail_ms": {"batch": [1, max(batches)], "ms": [0.04, 0.1]},
            "sources": ["synthetic_profile()"]}
    return LatencyProfile(rows=rows, meta=meta)
