"""Summary statistics of a run, and 95% confidence intervals over replications."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from offramp.core.modes import StageKind
from offramp.traces.format import ExitTrace

from .records import RunRecords

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p99.9": 99.9}
# The latency breakdown's metrics: queueing and service, then each stage kind's time per request.
STAGE_STATS = {"mean": None, "p50": 50, "p99": 99}  # per stage kind: the mean, two percentiles


def stage_metric(kind: StageKind, stat: str = "mean") -> str:
    """The summary's name for a stage kind's time per request (``stage_segment_p99_ms``)."""
    return f"stage_{kind}_{stat}_ms"


BETWEEN = "between_stages"  # rebatch: time waiting in front of stages after the first
BREAKDOWN = (["wait_mean_ms", "wait_p50_ms", "wait_p99_ms", "in_service_mean_ms",
              "in_service_p50_ms", "in_service_p99_ms"]
             + [stage_metric(kind, stat) for kind in StageKind for stat in STAGE_STATS]
             + [f"{BETWEEN}_{stat}_ms" for stat in STAGE_STATS])  # (rebatch only)


def measured_mask(rec: RunRecords, warmup_fraction: float) -> np.ndarray:
    """Requests kept for statistics: all but the first ``warmup_fraction`` by arrival."""
    n = rec.arrival.size
    cut = int(math.floor(n * warmup_fraction))
    keep = np.zeros(n, dtype=bool)
    keep[np.argsort(rec.arrival, kind="stable")[cut:]] = True
    return keep


def request_parts_ms(rec: RunRecords) -> dict[StageKind, np.ndarray] | None:
    """Each request's time in service by stage kind (ms), from its batch's dispatch to its
    exit: the parts add up to its service time. None where the run did not record them."""
    if rec.parts is None:
        return None
    per = rec.parts * 1000.0
    return {kind: per[:, kind.code] for kind in StageKind}


def between_ms(rec: RunRecords) -> np.ndarray | None:
    """``rebatch``: each request's time waiting in front of stages after the first (ms; with
    its parts it adds up to its service time). None in the other exit modes."""
    between = rec.extra.get("between_s")
    return None if between is None else between * 1000.0


def _breakdown(rec: RunRecords, keep: np.ndarray) -> dict[str, float]:
    """Mean, p50 and p99 of each stage kind's time per request (every kind, so replications
    share their keys; a kind the run never timed is 0), and of the time between stages where
    the run rebatches."""
    parts = request_parts_ms(rec)
    if parts is None:
        return {}
    named = {stage_metric(kind, "{}"): ms for kind, ms in parts.items()}
    if (between := between_ms(rec)) is not None:
        named[f"{BETWEEN}_{{}}_ms"] = between
    out = {}
    qs = [q for q in STAGE_STATS.values() if q is not None]
    for name, ms in named.items():
        ms = ms[keep]
        at = dict(zip(qs, np.percentile(ms, qs).tolist(), strict=True))  # one partition
        for stat, q in STAGE_STATS.items():
            out[name.format(stat)] = float(ms.mean()) if q is None else at[q]
    return out


def summarize_run(rec: RunRecords, trace: ExitTrace, warmup_fraction: float,
                  slo_ms: float | None, replicas: int) -> dict[str, Any]:
    """Flat metrics of one replication, over the requests after warm-up."""
    keep = measured_mask(rec, warmup_fraction)
    lat_ms = (rec.finish[keep] - rec.arrival[keep]) * 1000.0
    wait_ms = (rec.dispatch[keep] - rec.arrival[keep]) * 1000.0
    t0, t1 = rec.arrival[keep].min(), rec.finish[keep].max()
    window = max(t1 - t0, 1e-12)
    k_exits = trace.n_exits
    samples, exits = rec.sample[keep], rec.exit[keep]
    # Each array's percentiles from one call (one partition; the same values as one by one).
    wait_p50, wait_p99 = np.percentile(wait_ms, [50, 99]).tolist()
    service_p50, service_p99 = np.percentile(lat_ms - wait_ms, [50, 99]).tolist()
    out: dict[str, Any] = {
        "requests": int(keep.sum()),
        "throughput_rps": keep.sum() / window,
        "latency_mean_ms": float(lat_ms.mean()),
        "wait_mean_ms": float(wait_ms.mean()),
        "wait_p50_ms": wait_p50,
        "wait_p99_ms": wait_p99,
        "in_service_mean_ms": float((lat_ms - wait_ms).mean()),
        "in_service_p50_ms": service_p50,
        "in_service_p99_ms": service_p99,
    }
    out.update(_breakdown(rec, keep))
    lat_q = np.percentile(lat_ms, list(PERCENTILES.values())).tolist()
    for name, value in zip(PERCENTILES, lat_q, strict=True):
        out[f"latency_{name}_ms"] = value
    out["latency_max_ms"] = float(lat_ms.max())
    out["accuracy"] = float(trace.correct[samples, exits].mean())
    out["agreement"] = float(trace.agree[samples, exits].mean())
    out["full_model_accuracy"] = float(trace.correct[samples, k_exits - 1].mean())
    frac = np.bincount(exits, minlength=k_exits) / exits.size
    for k in range(k_exits):
        out[f"exit_fraction_{k}"] = float(frac[k])
    # Batches dispatched inside the measured window.
    bmask = (rec.batch_dispatch >= t0) & (rec.batch_dispatch <= t1)
    sizes = rec.batch_sizes[bmask]
    for k in range(k_exits):
        ran = sizes[:, k] > 0
        out[f"batch_size_stage_{k}"] = float(sizes[ran, k].mean()) if ran.any() else 0.0
    service_ms = (rec.batch_finish[bmask] - rec.batch_dispatch[bmask]) * 1000.0
    out["batch_time_mean_ms"] = float(service_ms.mean()) if service_ms.size else float("nan")
    out["batch_time_p99_ms"] = float(np.percentile(service_ms, 99)) if service_ms.size else float("nan")
    busy = np.clip(np.minimum(rec.batch_finish, t1) - np.maximum(rec.batch_dispatch, t0), 0, None)
    out["utilisation"] = float(busy.sum() / (window * replicas))
    if slo_ms is not None:
        ok = lat_ms <= slo_ms
        out["slo_attainment"] = float(ok.mean())
        out["goodput_rps"] = float(ok.sum() / window)
    return out


def combine(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and 95% CI half-width (Student t) of each metric over replications."""
    out = {}
    n = len(runs)
    for key in runs[0]:
        vals = np.array([r[key] for r in runs], dtype=float)
        mean = float(vals.mean())
        if n > 1:
            half = float(stats.t.ppf(0.975, n - 1) * vals.std(ddof=1) / math.sqrt(n))
        else:
            half = float("nan")
        out[key] = {"mean": mean, "ci95": half, "values": vals.tolist()}
    return out
