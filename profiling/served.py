"""Stage costs from served traffic: what each stage cost while the real loop served a stream.

A stage's time in a served stream is not what a profiler's loop times: on this CPU segments
ran 1.15x and heads 1.45x the profiler's p50 even back to back, and slower still right after
an idle spell (``docs/validation.md``). So :func:`fit_served_costs` fits, from the real
loop's own per-stage timings of streams served next to the runs it is judged on
(``offramp validate`` serves one per mode, load and repeat, on arrivals of their own),

    log t(stage kind, k, b) = log base(kind, k, b) + c_kind(idle bin) + σ(kind, k, b)·z

where *idle* is how long the loop sat idle right before the batch (bins of
:data:`IDLE_EDGES_MS`): the wake-up after idle, as a factor on every stage. σ comes from
each stage's residuals (their p50→p99 distance), the noise correlation within and across
batches from the residuals too, and the loop's per-batch time that no stage holds
(``batch_tail_ms``) from each batch's busy time minus its stages. One table for every exit
mode; richer models (a load-dependent "warmth" factor, a mode factor, fits per mode, a slow
speed wander) were tried on rounds 0-1 of a validation and did no better there
(docs/validation.md); ``offramp validate`` fits one table per load, on that load's streams
(the loop runs faster the harder it is driven). The simulator (``sim/service.py``) scales
every stage by the factor of its replica's idle time. Measurement side: numpy and the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from offramp.core.modes import StageKind

IDLE_EDGES_MS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)  # idle bins [0, 0.1), [0.1, 0.5), ..., [10, inf)
Z99 = 2.3263478740408408
MIN_CELL = 30  # stage times an idle bin or a (stage, size) needs before it is trusted
MIN_SIGMA = 100  # stage times a (stage, size) needs for its own sigma


def idle_before(dispatch_s: np.ndarray, finish_s: np.ndarray) -> np.ndarray:
    """Idle ms before each of one replica's batches, in order (idle since time 0 first)."""
    return 1000.0 * (dispatch_s - np.r_[0.0, finish_s[:-1]])


def idle_bin(idle_ms: np.ndarray | float):
    """The bin of :data:`IDLE_EDGES_MS` an idle time (ms) falls in."""
    return np.searchsorted(IDLE_EDGES_MS, idle_ms, side="right")


def _group_median(ids: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(median of ``values`` per group id 0..n-1 (0 where empty), count per group)."""
    order = np.lexsort((values, ids))
    v, g = values[order], ids[order]
    counts = np.bincount(g, minlength=n)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    med = np.zeros(n)
    ok = counts > 0
    lo = starts[ok] + (counts[ok] - 1) // 2
    hi = starts[ok] + counts[ok] // 2
    med[ok] = 0.5 * (v[lo] + v[hi])
    return med, counts


def _fill(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Bins with fewer than :data:`MIN_CELL` samples take the nearest trusted bin's value
    (0 where none is trusted)."""
    good = np.flatnonzero(counts >= MIN_CELL)
    if good.size == 0:
        return np.zeros_like(values)
    idx = np.arange(values.size)
    nearest = good[np.abs(idx[:, None] - good[None, :]).argmin(axis=1)]
    return values[nearest]


def ar1_from_series(mean: np.ndarray) -> float:
    """φ of a series whose autocorrelation at lag L (1..10) is fitted as c·φ^L; 0 when the
    autocorrelation is not positive at two lags at least, or does not decay."""
    if mean.size < 50:
        return 0.0
    mean = mean - mean.mean()
    lags = np.arange(1, 11)
    with np.errstate(invalid="ignore", divide="ignore"):
        ac = np.array([np.corrcoef(mean[:-lag], mean[lag:])[0, 1] for lag in lags])
    ok = np.isfinite(ac) & (ac > 0.02)
    if ok.sum() < 2:
        return 0.0
    slope = np.polyfit(lags[ok], np.log(ac[ok]), 1)[0]
    if slope >= 0:  # an autocorrelation that does not decay with the lag is noise, not memory
        return 0.0
    return float(np.clip(math.exp(slope), 0.0, 0.99))


def stage_table(runs: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every stage time of ``runs`` as columns: kind code, k, batch size, ms, idle ms before
    its batch, its batch's row (numbered across the runs)."""
    cols: dict[str, list[np.ndarray]] = {c: [] for c in ("kind", "k", "b", "ms", "idle", "batch")}
    offset = 0
    for run in runs:
        idle = idle_before(run["batch_dispatch"], run["batch_finish"])
        sb = run["stage_batch"].astype(np.int64)
        cols["kind"].append(run["stage_kind"].astype(np.int64))
        cols["k"].append(run["stage_k"].astype(np.int64))
        cols["b"].append(run["stage_size"].astype(np.int64))
        cols["ms"].append(run["stage_ms"].astype(float))
        cols["idle"].append(idle[sb])
        cols["batch"].append(sb + offset)
        offset += run["batch_dispatch"].size
    return {c: np.concatenate(v) for c, v in cols.items()}


def _backfit_means(y: np.ndarray, key_id: np.ndarray, c_id: np.ndarray, n_keys: int,
                   n_c: int, tol: float = 1e-10, max_iter: int = 500) -> np.ndarray:
    """The least-squares c of y = base[key] + c[c_id] (Gauss-Seidel on group means, to
    convergence): a start that medians alone cannot find when a stage's batch size and its
    idle time go together (large batches after short idles), where alternating medians stop
    at c = 0 with each size's base taken from its own most common idle bin."""
    c = np.zeros(n_c)
    n_key = np.maximum(np.bincount(key_id, minlength=n_keys), 1)
    n_cid = np.maximum(np.bincount(c_id, minlength=n_c), 1)
    for _ in range(max_iter):
        base = np.bincount(key_id, weights=y - c[c_id], minlength=n_keys) / n_key
        new = np.bincount(c_id, weights=y - base[key_id], minlength=n_c) / n_cid
        if np.abs(new - c).max() < tol:
            return new
        c = new
    return c


def _fit_additive(t: dict[str, np.ndarray], iterations: int = 4) -> dict[str, Any]:
    """base per (kind, k, b) + c per (kind, idle bin) in log ms: least squares (group means)
    first, then medians in turn from there (robust to the slow outliers)."""
    y = np.log(np.maximum(t["ms"], 1e-6))
    keys, key_id = np.unique(np.stack([t["kind"], t["k"], t["b"]], axis=1), axis=0,
                             return_inverse=True)
    key_id = key_id.ravel()
    ib = idle_bin(t["idle"])
    n_i, n_k = len(IDLE_EDGES_MS) + 1, len(StageKind)
    c_id = t["kind"] * n_i + ib
    c = _backfit_means(y, key_id, c_id, len(keys), n_k * n_i)
    for _ in range(iterations):
        base, _ = _group_median(key_id, y - c[c_id], len(keys))
        c_raw, c_n = _group_median(c_id, y - base[key_id], c.size)
        c = np.concatenate([_fill(c_raw[j * n_i:(j + 1) * n_i], c_n[j * n_i:(j + 1) * n_i])
                            for j in range(n_k)])
    # Present the idle factors relative to each kind's most common bin (base absorbs the rest).
    c, c_n = c.reshape(n_k, n_i), c_n.reshape(n_k, n_i)
    for j in range(n_k):
        shift = c[j, c_n[j].argmax()]
        c[j] -= shift
        base[keys[:, 0] == j] += shift
    resid = y - base[key_id] - c[t["kind"], ib]
    return {"keys": keys, "key_id": key_id, "base": base, "c": c, "c_n": c_n, "resid": resid}


def _noise_corr(t: dict[str, np.ndarray], z: np.ndarray) -> dict[str, float]:
    """``within``: the mean correlation of two stages' standardised residuals in one batch
    (segments and heads; stages without noise, ``z`` NaN, left out); ``across``: φ of the
    batches' mean residual (:func:`ar1_from_series`)."""
    pick = np.isin(t["kind"], (StageKind.SEGMENT.code, StageKind.HEAD.code)) & np.isfinite(z)
    batch, zz = t["batch"][pick], z[pick]
    s1 = np.bincount(batch, weights=zz)
    s2 = np.bincount(batch, weights=zz * zz)
    n = np.bincount(batch)
    ok = n >= 2
    den = float(((n[ok] - 1) * s2[ok]).sum())
    within = float(np.clip(((s1[ok] ** 2 - s2[ok]).sum()) / den, 0.0, 0.99)) if den > 0 else 0.0
    across = ar1_from_series(s1[ok] / n[ok]) if within > 0 else 0.0
    return {"within": round(within, 4), "across": round(across, 4)}


def _tail(runs: Sequence[dict[str, np.ndarray]]) -> dict[str, list]:
    """Mean per-batch time no stage holds, by batch size (ms)."""
    sizes, gaps = [], []
    for run in runs:
        nb = run["batch_dispatch"].size
        timed = np.bincount(run["stage_batch"].astype(np.int64), weights=run["stage_ms"],
                            minlength=nb)
        gaps.append(1000.0 * (run["batch_finish"] - run["batch_dispatch"]) - timed)
        # the batch size: its first segment's (in rebatch a later stage's batch starts later)
        sizes.append(run["batch_sizes"].max(axis=1).astype(np.int64))
    size, gap = np.concatenate(sizes), np.concatenate(gaps)
    out_b, out_ms = [], []
    for b in np.unique(size):
        g = gap[size == b]
        if g.size >= 20:
            out_b.append(int(b))
            out_ms.append(round(max(0.0, float(g.mean())), 6))
    return {"batch": out_b, "ms": out_ms}


def _kind_sigma(keys: np.ndarray, sigma: np.ndarray, kind: StageKind) -> float:
    """The median of a stage kind's own sigmas (0 when none of its stages has one)."""
    own = sigma[(keys[:, 0] == kind.code) & np.isfinite(sigma)]
    return float(np.median(own)) if own.size else 0.0


def fill_ratio(served_at: dict[int, float], b: int) -> float:
    """Served / profiled time at a batch size the streams did not serve often enough: the
    ratio at the trusted sizes of the same stage (``served_at``: size -> ratio), linear in the
    size between the two around ``b`` and held at the nearest beyond them, so the profile's
    own shape carries a stage from the sizes served to those never served (1 where the stage
    has no trusted size)."""
    if not served_at:
        return 1.0
    sizes = sorted(served_at)
    if b <= sizes[0]:
        return served_at[sizes[0]]
    if b >= sizes[-1]:
        return served_at[sizes[-1]]
    hi = next(x for x in sizes if x > b)
    lo = max(x for x in sizes if x <= b)  # b itself where it is trusted
    return served_at[lo] + (served_at[hi] - served_at[lo]) * (b - lo) / (hi - lo)


def fill_rows(rows: list[list], reference: Callable[[int], float]) -> list[list]:
    """One stage's ``[batch, p50 ms, sigma, count]`` rows with every size counted fewer than
    :data:`MIN_CELL` times filled from the trusted ones (:func:`fill_ratio`) and the profile's
    own time at that size (``reference(b)``)."""
    served_at = {int(b): p50 / reference(int(b)) for b, p50, _, n in rows
                 if n >= MIN_CELL and reference(int(b)) > 0}
    return [[int(b), round(p50 if n >= MIN_CELL else reference(int(b)) * fill_ratio(
        served_at, int(b)), 6), round(float(sig), 4), int(n)] for b, p50, sig, n in rows]


def refill(served: dict[str, Any], reference: Callable[[str, int, int], float]
           ) -> dict[str, Any]:
    """A ``served_costs`` table fitted before :func:`fill_ratio` with its untrusted sizes
    filled again by it (the trusted rows, factors and noise unchanged)."""
    stages = {}
    for key, rows in served["stages"].items():
        kind, k = key.split()
        stages[key] = fill_rows(rows, lambda b, kind=kind, k=int(k): reference(kind, k, b))
    return {**served, "stages": stages}


def fit_served_costs(runs: Sequence[dict[str, np.ndarray]],
                     reference: Callable[[str, int, int], float],
                     stages: Sequence[tuple[str, int, Sequence[int]]],
                     sources: Sequence[str] = ()) -> dict[str, Any]:
    """The ``served_costs`` table of a profile from real served streams (arrays as
    ``real_runs.serve_stream`` writes them).

    ``stages``: every (kind, k, batch sizes) the profile covers; ``reference(kind, k, b)``:
    the profile's own p50 (ms) for a stage, used where the streams did not run a size at least
    :data:`MIN_CELL` times, scaled by the served/reference ratio of the nearest sizes they did
    (:func:`fill_rows`)."""
    if not runs:
        raise ValueError("fit_served_costs needs at least one served stream")
    t = stage_table(runs)
    fit = _fit_additive(t)
    keys, base, resid, key_id = fit["keys"], fit["base"], fit["resid"], fit["key_id"]
    counts = np.bincount(key_id, minlength=len(keys))
    order = np.lexsort((resid, key_id))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    sigma = np.full(len(keys), np.nan)
    for i in np.flatnonzero(counts >= MIN_SIGMA):
        r = resid[order[starts[i]:starts[i] + counts[i]]]
        sigma[i] = max(0.0, (float(np.percentile(r, 99)) - float(np.median(r))) / Z99)
    seen = {(StageKind.from_code(kc), int(k), int(b)): i for i, (kc, k, b) in enumerate(keys)}
    sig0_of = {kind: _kind_sigma(keys, sigma, kind) for kind in StageKind}
    table: dict[str, list[list[float]]] = {}
    for kind, k, sizes in stages:
        kind = StageKind(kind)
        sig0 = sig0_of[kind]
        rows = []
        for b in sizes:
            i = seen.get((kind, k, b))
            n = int(counts[i]) if i is not None else 0
            sig = sigma[i] if n >= MIN_CELL and np.isfinite(sigma[i]) else sig0
            rows.append([int(b), math.exp(base[i]) if n >= MIN_CELL else None, sig, n])
        table[f"{kind} {k}"] = fill_rows(rows, lambda b, kind=kind, k=k: reference(kind, k, b))
    # Each stage standardised by the sigma the table gives it (its own, else its kind's);
    # stages that get no noise (sigma 0: z not finite) carry no correlation.
    used = np.array([s if np.isfinite(s) else sig0_of[StageKind.from_code(kc)]
                     for s, kc in zip(sigma, keys[:, 0], strict=True)])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = resid / used[key_id]
    return {
        "idle_edges_ms": list(IDLE_EDGES_MS),
        "factor": {kind: {"idle": [round(math.exp(x), 4) for x in fit["c"][j]],
                          "idle_n": fit["c_n"][j].astype(int).tolist()}
                   for j, kind in enumerate(StageKind)},
        "stages": table, "noise_corr": _noise_corr(t, z), "batch_tail_ms": _tail(runs),
        "median_abs_residual": round(float(np.median(np.abs(resid))), 4),
        "stage_times": int(t["ms"].size), "batches": int(t["batch"].max()) + 1,
        "sources": list(sources),
    }
