"""Stage costs from served traffic: what each stage cost while the real loop served a stream,
and how that cost moves with the loop's state.

A stage's time in a served stream is not one number per (stage, batch size): on the same
machine a segment ran faster when the loop had been busy for a while and slower right after
an idle spell (``docs/validation.md``). So :func:`fit_served_costs` fits, from the real loop's
own per-stage timings of streams served before the runs it is judged on (``offramp validate``
serves one per mode and load, on arrivals of their own),

    log t(stage kind, k, b) = log base(kind, k, b) + β_kind·(u − ½) + c_kind(idle bin)
                              + m_kind(exit mode) + σ·z

where *idle* is how long the loop sat idle right before the batch and *warmth* u ∈ [0, 1] is
how busy it has been lately: an exponential average of the busy indicator with time constant
τ (:func:`warmth_at`, :func:`warmth_after`; τ is chosen from a few candidates by the fit's
median absolute residual) and m the exit mode's own loop (``none`` runs its segments back to
back, ``keep`` and ``shrink`` run heads and exit checks between them). σ comes from each
stage's residuals (their p50→p99 distance), the noise correlation within and across batches
from the residuals too, and the loop's per-batch
time that no stage holds (``batch_tail_ms``) from each batch's busy time minus its stages.
The simulator (``sim/service.py``) tracks the same u and idle per replica and scales every
stage by the fitted factors. Measurement side: numpy and the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# A stage's kind as the real loop's files store it (``stage_kind`` codes are indices here).
KIND_CODES = ("overhead", "segment", "head", "check", "compact", "handoff")
KINDS = KIND_CODES
IDLE_EDGES_MS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)  # idle bins [0, 0.1), [0.1, 0.5), ..., [10, inf)
WARMTH_EDGES = (0.2, 0.4, 0.6, 0.75, 0.9)  # warmth bins [0, 0.2), ..., [0.9, 1]
TAUS_MS = (10.0, 30.0, 100.0, 300.0, 1000.0)
Z99 = 2.3263478740408408
MIN_CELL = 30  # stage times a state bin needs before its factor is trusted
MIN_SIGMA = 100  # stage times a (stage, size) needs for its own sigma


def warmth_at(u_after: float, idle_s: float, tau_s: float) -> float:
    """Warmth at a batch's dispatch: the last batch's ``u_after`` decayed over the idle gap."""
    return u_after * math.exp(-max(idle_s, 0.0) / tau_s)


def warmth_after(u_at: float, busy_s: float, tau_s: float) -> float:
    """Warmth when a batch that started at warmth ``u_at`` and kept the loop busy ``busy_s``
    ends (the busy indicator's exponential average moves toward 1)."""
    return 1.0 - (1.0 - u_at) * math.exp(-max(busy_s, 0.0) / tau_s)


def loop_state(dispatch_s: np.ndarray, finish_s: np.ndarray, tau_s: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """(idle ms before each batch, warmth at its dispatch) of one replica's batches in order;
    the loop starts cold (u = 0) and idle since time 0."""
    n = dispatch_s.size
    idle, warm = np.empty(n), np.empty(n)
    u, free = 0.0, 0.0
    for i, (d, f) in enumerate(zip(dispatch_s.tolist(), finish_s.tolist(), strict=True)):
        gap = d - free
        u = warmth_at(u, gap, tau_s)
        idle[i], warm[i] = 1000.0 * gap, u
        u = warmth_after(u, f - d, tau_s)
        free = f
    return idle, warm


def state_bins(idle_ms: np.ndarray | float, warmth: np.ndarray | float):
    """(idle bin, warmth bin) indices of :data:`IDLE_EDGES_MS` and :data:`WARMTH_EDGES`."""
    return (np.searchsorted(IDLE_EDGES_MS, idle_ms, side="right"),
            np.searchsorted(WARMTH_EDGES, warmth, side="right"))


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
    autocorrelation is not positive at two lags at least."""
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
    return float(np.clip(math.exp(slope), 0.0, 0.99))


def _stage_table(runs: Sequence[dict[str, np.ndarray]], modes: Sequence[int], tau_s: float
                 ) -> dict[str, np.ndarray]:
    cols: dict[str, list[np.ndarray]] = {c: [] for c in ("kind", "k", "b", "ms", "idle", "warm",
                                                         "batch", "mode", "t", "run")}
    offset = 0
    for i, (run, mode) in enumerate(zip(runs, modes, strict=True)):
        idle, warm = loop_state(run["batch_dispatch"], run["batch_finish"], tau_s)
        sb = run["stage_batch"].astype(np.int64)
        cols["kind"].append(run["stage_kind"].astype(np.int64))
        cols["k"].append(run["stage_k"].astype(np.int64))
        cols["b"].append(run["stage_size"].astype(np.int64))
        cols["ms"].append(run["stage_ms"].astype(float))
        cols["idle"].append(idle[sb])
        cols["warm"].append(warm[sb])
        cols["batch"].append(sb + offset)
        cols["mode"].append(np.full(sb.size, mode, dtype=np.int64))
        cols["t"].append(run["batch_dispatch"][sb])
        cols["run"].append(np.full(sb.size, i, dtype=np.int64))
        offset += run["batch_dispatch"].size
    return {c: np.concatenate(v) for c, v in cols.items()}


def warmth_centres() -> list[float]:
    """The middle of each warmth bin: where the table's warmth factors are given; the
    simulator interpolates log-linearly between them (flat beyond the first and last)."""
    edges = [0.0, *WARMTH_EDGES, 1.0]
    return [0.5 * (lo + hi) for lo, hi in zip(edges, edges[1:], strict=False)]


def _warm_term(u: np.ndarray) -> np.ndarray:
    """Warmth as the fit and the simulator use it: clipped to the outer bin centres, minus
    :data:`WARMTH_REF` (so a slope β gives the factor exp(β·term))."""
    c = warmth_centres()
    return np.clip(u, c[0], c[-1]) - WARMTH_REF


WARMTH_REF = 0.5


def _fit_additive(t: dict[str, np.ndarray], n_m: int, iterations: int = 5) -> dict[str, Any]:
    """base per (kind, k, b) + β per kind × warmth + c per (kind, idle bin) + m per
    (kind, mode) in log ms, in turn: medians for base, c and m, a robust line for β (the
    warmth factor is smooth and monotone: a noisy table per warmth bin fed back through the
    simulated loop's own warmth made runs near a bin edge flip between costs)."""
    y = np.log(np.maximum(t["ms"], 1e-6))
    keys, key_id = np.unique(np.stack([t["kind"], t["k"], t["b"]], axis=1), axis=0,
                             return_inverse=True)
    key_id = key_id.ravel()
    ib, ub = state_bins(t["idle"], t["warm"])
    w = _warm_term(t["warm"])
    n_i, n_u, n_k = len(IDLE_EDGES_MS) + 1, len(WARMTH_EDGES) + 1, len(KINDS)
    c_id = t["kind"] * n_i + ib
    m_id = t["kind"] * n_m + t["mode"]
    beta, c, m = np.zeros(n_k), np.zeros(n_k * n_i), np.zeros(n_k * n_m)
    for _ in range(iterations):
        base, _ = _group_median(key_id, y - beta[t["kind"]] * w - c[c_id] - m[m_id], len(keys))
        r = y - base[key_id] - c[c_id] - m[m_id]
        for j in range(n_k):
            sel = t["kind"] == j
            if sel.sum() < MIN_CELL or np.var(w[sel]) < 1e-4:
                beta[j] = 0.0
                continue
            rr, ww = r[sel], w[sel]
            mad = np.median(np.abs(rr - np.median(rr))) + 1e-9
            keep = np.abs(rr - np.median(rr)) < 4 * mad  # the line through the body, not spikes
            beta[j] = float(np.polyfit(ww[keep], rr[keep], 1)[0]) if keep.sum() > 10 else 0.0
        aw = beta[t["kind"]] * w
        c_raw, c_n = _group_median(c_id, y - base[key_id] - aw - m[m_id], c.size)
        c = np.concatenate([_fill(c_raw[j * n_i:(j + 1) * n_i], c_n[j * n_i:(j + 1) * n_i])
                            for j in range(n_k)])
        m_raw, m_n = _group_median(m_id, y - base[key_id] - aw - c[c_id], m.size)
        m = np.where(m_n >= MIN_CELL, m_raw, 0.0)
    # Present idle and mode factors relative to each kind's most common state (base absorbs
    # the rest); warmth relative to WARMTH_REF.
    c, m = c.reshape(n_k, n_i), m.reshape(n_k, n_m)
    c_n, m_n = c_n.reshape(n_k, n_i), m_n.reshape(n_k, n_m)
    a_n = np.bincount(t["kind"] * n_u + ub, minlength=n_k * n_u).reshape(n_k, n_u)
    for j in range(n_k):
        shift = c[j, c_n[j].argmax()] + m[j, m_n[j].argmax()]
        c[j] -= c[j, c_n[j].argmax()]
        m[j] = np.where(m_n[j] >= MIN_CELL, m[j] - m[j, m_n[j].argmax()], 0.0)
        base[keys[:, 0] == j] += shift
    a = beta[:, None] * (np.array(warmth_centres())[None, :] - WARMTH_REF)
    resid = y - base[key_id] - beta[t["kind"]] * w - c[t["kind"], ib] - m[t["kind"], t["mode"]]
    return {"keys": keys, "key_id": key_id, "base": base, "a": a, "c": c, "m": m, "a_n": a_n,
            "c_n": c_n, "m_n": m_n, "resid": resid, "beta": beta}


def _noise_corr(t: dict[str, np.ndarray], z: np.ndarray) -> dict[str, float]:
    """``within``: the mean correlation of two stages' standardised residuals in one batch
    (segments and heads); ``across``: φ of the batches' mean residual (:func:`ar1_from_series`)."""
    pick = np.isin(t["kind"], (1, 2))
    batch, zz = t["batch"][pick], z[pick]
    nb = int(batch.max()) + 1 if batch.size else 0
    s1 = np.bincount(batch, weights=zz, minlength=nb)
    s2 = np.bincount(batch, weights=zz * zz, minlength=nb)
    n = np.bincount(batch, minlength=nb)
    ok = n >= 2
    den = float(((n[ok] - 1) * s2[ok]).sum())
    within = float(np.clip(((s1[ok] ** 2 - s2[ok]).sum()) / den, 0.0, 0.99)) if den > 0 else 0.0
    across = ar1_from_series(s1[ok] / n[ok]) if within > 0 else 0.0
    return {"within": round(within, 4), "across": round(across, 4)}


WANDER_WINDOW_S = 0.1
WANDER_LAGS = range(2, 41)  # 0.2-4 s: past the batch-to-batch correlation, within a stream


def _wander(t: dict[str, np.ndarray], resid: np.ndarray) -> dict[str, float]:
    """The machine's slow speed wander: an Ornstein-Uhlenbeck process in time (σ, τ) fitted
    to the autocovariance of the segments' mean residual in 0.1 s windows at lags of
    0.2-4 s, pooled over the streams (cov(lag) = σ²·exp(−lag/τ)); σ = 0 where there is none."""
    pick = t["kind"] == 1
    num, den = np.zeros(max(WANDER_LAGS) + 1), np.zeros(max(WANDER_LAGS) + 1)
    total_var, n_total = 0.0, 0
    for run in np.unique(t["run"][pick]):
        m = pick & (t["run"] == run)
        w = np.floor(t["t"][m] / WANDER_WINDOW_S).astype(np.int64)
        w -= w.min()
        cnt = np.bincount(w)
        mean = np.bincount(w, weights=resid[m]) / np.maximum(cnt, 1)
        ok = cnt >= 3
        if ok.sum() < 10:
            continue
        # Within the stream only: one stream's offset from another is the machine's drift over
        # minutes, which the served streams beside every repeat already average over.
        x = np.where(ok, mean - mean[ok].mean(), 0.0)
        total_var += float((x[ok] ** 2).sum())
        n_total += int(ok.sum())
        for lag in WANDER_LAGS:
            if lag >= x.size:
                break
            both = ok[:-lag] & ok[lag:]
            num[lag] += float((x[:-lag] * x[lag:])[both].sum())
            den[lag] += float(both.sum())
    lags = np.array([lag for lag in WANDER_LAGS if den[lag] >= 50])
    if lags.size < 5 or n_total == 0:
        return {"sigma": 0.0, "tau_s": 1.0}
    cov = num[lags] / den[lags]
    good = cov > 0
    if good.sum() < 5:
        return {"sigma": 0.0, "tau_s": 1.0}
    lag_s = lags[good] * WANDER_WINDOW_S
    slope, icept = np.polyfit(lag_s, np.log(cov[good]), 1, w=np.sqrt(den[lags][good]))
    if slope >= 0:
        return {"sigma": 0.0, "tau_s": 1.0}
    var = min(math.exp(icept), 0.8 * total_var / n_total)
    return {"sigma": round(math.sqrt(var), 4), "tau_s": round(float(np.clip(-1 / slope, 0.2, 60)), 3)}


def _tail(runs: Sequence[dict[str, np.ndarray]]) -> dict[str, list]:
    """Mean per-batch time no stage holds, by batch size (ms)."""
    sizes, gaps = [], []
    for run in runs:
        nb = run["batch_dispatch"].size
        timed = np.bincount(run["stage_batch"].astype(np.int64), weights=run["stage_ms"],
                            minlength=nb)
        gaps.append(1000.0 * (run["batch_finish"] - run["batch_dispatch"]) - timed)
        sizes.append(run["batch_sizes"][:, 0].astype(np.int64))
    size, gap = np.concatenate(sizes), np.concatenate(gaps)
    out_b, out_ms = [], []
    for b in np.unique(size):
        g = gap[size == b]
        if g.size >= 20:
            out_b.append(int(b))
            out_ms.append(round(max(0.0, float(g.mean())), 6))
    return {"batch": out_b, "ms": out_ms}


def fit_served_costs(runs: Sequence[dict[str, np.ndarray]], modes: Sequence[str],
                     reference: Callable[[str, int, int], float],
                     stages: Sequence[tuple[str, int, Sequence[int]]],
                     sources: Sequence[str] = ()) -> dict[str, Any]:
    """The ``served_costs`` table of a profile from real served streams (arrays as
    ``real_runs.serve_stream`` writes them; ``modes``: each stream's exit mode).

    ``stages``: every (kind, k, batch sizes) the profile covers; ``reference(kind, k, b)``:
    the profile's own p50 (ms) for a stage, used where the streams never ran that size, scaled
    by the kind's median ratio of served base to reference where they did."""
    if not runs:
        raise ValueError("fit_served_costs needs at least one served stream")
    names = sorted(set(modes))
    mode_idx = [names.index(m) for m in modes]
    best = None
    for tau in TAUS_MS:
        t = _stage_table(runs, mode_idx, tau / 1000.0)
        fit = _fit_additive(t, len(names))
        score = float(np.median(np.abs(fit["resid"])))
        if best is None or score < best[0]:
            best = (score, tau, t, fit)
    score, tau, t, fit = best
    keys, base, resid, key_id = fit["keys"], fit["base"], fit["resid"], fit["key_id"]
    counts = np.bincount(key_id, minlength=len(keys))
    order = np.lexsort((resid, key_id))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    sigma = np.full(len(keys), np.nan)
    for i in np.flatnonzero(counts >= MIN_SIGMA):
        r = resid[order[starts[i]:starts[i] + counts[i]]]
        sigma[i] = max(0.0, (float(np.percentile(r, 99)) - float(np.median(r))) / Z99)
    seen = {(KIND_CODES[int(kc)], int(k), int(b)): i for i, (kc, k, b) in enumerate(keys)}
    table: dict[str, list[list[float]]] = {}
    for kind, k, sizes in stages:
        own = [seen[(kind, k, b)] for b in sizes if (kind, k, b) in seen]
        kind_sig = [sigma[i] for i in range(len(keys)) if KIND_CODES[int(keys[i, 0])] == kind
                    and np.isfinite(sigma[i])]
        ratio = [math.exp(base[i]) / reference(kind, k, int(keys[i, 2])) for i in own
                 if counts[i] >= MIN_CELL and reference(kind, k, int(keys[i, 2])) > 0]
        scale = float(np.median(ratio)) if ratio else 1.0
        sig0 = float(np.median(kind_sig)) if kind_sig else 0.0
        rows = []
        for b in sizes:
            i = seen.get((kind, k, b))
            trusted = i is not None and counts[i] >= MIN_CELL
            p50 = math.exp(base[i]) if trusted else reference(kind, k, b) * scale
            sig = sigma[i] if trusted and np.isfinite(sigma[i]) else sig0
            rows.append([int(b), round(p50, 6), round(float(sig), 4),
                         int(counts[i]) if i is not None else 0])
        table[f"{kind} {k}"] = rows
    sig_of_key = np.array([s if np.isfinite(s) else 0.0 for s in sigma])
    z = resid / np.maximum(sig_of_key[key_id], 1e-3)
    corr = _noise_corr(t, z)
    wander = _wander(t, resid)
    w2 = wander["sigma"] ** 2
    if w2 > 0:
        # The wander is part of every stage's spread and of what one batch's stages share:
        # take it out of both, so that the simulation's total spread stays what was measured.
        seg = [r[2] for key, rows in table.items() if key.split(" ")[0] in ("segment", "head")
               for r in rows if r[3] >= MIN_SIGMA]
        mean_var = float(np.mean(np.square(seg))) if seg else 0.0
        if mean_var > w2:
            corr["within"] = round(float(np.clip((corr["within"] * mean_var - w2)
                                                 / (mean_var - w2), 0.0, 0.99)), 4)
        for rows in table.values():
            for r in rows:
                r[2] = round(math.sqrt(max(r[2] ** 2 - w2, (0.3 * r[2]) ** 2)), 4)
    return {
        "tau_ms": tau, "idle_edges_ms": list(IDLE_EDGES_MS), "warmth_edges": list(WARMTH_EDGES),
        "factor": {kind: {"warmth": [round(math.exp(x), 4) for x in fit["a"][j]],
                          "warmth_slope": round(float(fit["beta"][j]), 4),
                          "warmth_n": fit["a_n"][j].astype(int).tolist(),
                          "idle": [round(math.exp(x), 4) for x in fit["c"][j]],
                          "idle_n": fit["c_n"][j].astype(int).tolist(),
                          "mode": {m: round(math.exp(fit["m"][j, i]), 4)
                                   for i, m in enumerate(names)},
                          "mode_n": {m: int(fit["m_n"][j, i]) for i, m in enumerate(names)}}
                   for j, kind in enumerate(KINDS)},
        "stages": table, "noise_corr": corr, "wander": wander, "batch_tail_ms": _tail(runs),
        "median_abs_residual": round(score, 4),
        "stage_times": int(t["ms"].size), "batches": int(t["batch"].max()) + 1,
        "sources": list(sources),
    }
