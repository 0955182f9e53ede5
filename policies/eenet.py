"""EENet (WACV'24): a learned early-exit scheduler trained under an average cost budget.

Per exit k a linear score head q̂_k (no bias) over [softmax_k, max_k, conf_k, q̂_0 … q̂_{k−1}],
initialised to q̂ = max probability; per early exit an assignment head r_k = σ(MLP) over the
same features plus q̂_k (hidden width ``hidden_scale`` × input width). Sequential exit
distribution π_k = r_k Π_{j<k}(1 − r_j), the last exit takes the remainder. Losses: a q phase
(π-weighted BCE of q̂ against correctness) and an r phase (1e-3·KL(t ‖ π) with t ∝ q̂, plus
1e-2·|mean Σ π c − B| / B), alternating every ``phase_epochs`` epochs (q phase first), each
phase with its own optimizer over its own heads. Trained on the val split; thresholds by the
sequential top-n calibration on the learned scores with fractions = mean π; the best of
``n_fits`` fits by val accuracy among those whose achieved val cost (mean c_exit after
calibration) is within 10 % of B (else the closest in cost) is kept.

Departures from the paper, for CPU training: lr 1e-2 and 150 epochs by default (the paper's
3e-5 and up to 1000 epochs barely move the assignment heads in that many steps; a small val
set, with few batches per epoch, needs more epochs). Weight decay is decoupled (AdamW): with
the tiny r-phase loss weights, Adam's coupled L2 term dominates the gradient and pins every
r_k at 0.5. The public code's defects are avoided: gradients are zeroed every step, π is the
sequential product (not a softmax over r), and the last exit always takes every sample that
reaches it.

Also the geometric ``exp`` exit distribution baseline, :func:`exp_fractions`.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from offramp.common.errors import InputError
from offramp.traces.format import ExitTrace

from .base import ExitPolicy
from .costs import average_cost, check_costs
from .thresholds import from_fractions

if TYPE_CHECKING:  # torch is imported when a policy is fitted, not with the package
    import torch
    from torch import nn

COST_SLACK = 0.10  # a fit is "within budget" when its val cost is within 10 % of B


def budget_range(costs: Sequence[float]) -> str:
    """The budgets that mean something for these per-exit costs, as advice."""
    return (f"give a budget between {costs[0]:.4g} ms (everything at the first exit) and "
            f"{costs[-1]:.4g} ms (the full model) per sample")


def exp_fractions(costs: Sequence[float], budget_ms: float) -> np.ndarray:
    """EENet's geometric exit distribution p_k ∝ q^k with the largest q whose nominal cost
    Σ p_k c_k stays within ``budget_ms`` (a budget at or above the last exit's cost sends
    everything there)."""
    c = check_costs(costs, len(costs))
    if budget_ms < c[0]:
        raise InputError("policy", "budget_ms", f"{budget_ms} ms is below the first exit's cost "
                         f"{c[0]:.4g} ms", budget_range(c))
    k = np.arange(c.size)

    def dist(log_q: float) -> np.ndarray:
        z = k * log_q
        p = np.exp(z - z.max())
        return p / p.sum()

    lo, hi = -60.0, 60.0
    if dist(hi) @ c <= budget_ms:
        return dist(hi)
    for _ in range(200):  # cost grows with q: bisect for the last q within budget
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if dist(mid) @ c <= budget_ms else (lo, mid)
    return dist(lo)


def eenet_features(trace: ExitTrace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(softmax (N, K, C), max (N, K), conf = 1 − normalised entropy (N, K)) as float tensors."""
    import torch

    if trace.softmax is None:
        raise InputError(trace.source, "softmax", "this policy needs the per-exit softmax, which "
                         "the trace does not store", "record the trace with softmax kept")
    sm = torch.as_tensor(np.asarray(trace.softmax, dtype=np.float32))
    mx = torch.as_tensor(np.asarray(trace.maxprob, dtype=np.float32))
    conf = torch.as_tensor(1.0 - np.asarray(trace.entropy, dtype=np.float32))
    return sm, mx, conf


def _scheduler(n_exits: int, n_classes: int, hidden_scale: float) -> nn.ModuleDict:
    """Score heads (one per exit) and assignment heads (one per early exit)."""
    import torch
    from torch import nn

    score = nn.ModuleList()
    for k in range(n_exits):
        lin = nn.Linear(n_classes + 2 + k, 1, bias=False)
        with torch.no_grad():
            lin.weight.zero_()
            lin.weight[0, n_classes] = 1.0  # q̂ = max probability
        score.append(lin)
    assign = nn.ModuleList()
    for k in range(n_exits - 1):
        width = n_classes + 3 + k
        hidden = max(2, round(width * hidden_scale))
        assign.append(nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1)))
    return nn.ModuleDict({"score": score, "assign": assign})


def _forward(net: nn.ModuleDict, sm: torch.Tensor, mx: torch.Tensor, conf: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw scores (n, K), log π (n, K))."""
    import torch
    from torch.nn.functional import logsigmoid

    k_exits = sm.shape[1]
    prev: list[torch.Tensor] = []
    raw, logits = [], []
    for k in range(k_exits):
        x = torch.cat([sm[:, k], mx[:, k:k + 1], conf[:, k:k + 1], *prev], dim=1)
        q = net["score"][k](x)
        raw.append(q[:, 0])
        q = q.clamp(0.0, 1.0)
        if k < k_exits - 1:
            logits.append(net["assign"][k](torch.cat([x, q.detach()], dim=1))[:, 0])
        prev.append(q)
    z = torch.stack(logits, dim=1)
    stay = logsigmoid(-z).cumsum(dim=1)  # log Π_{j≤k} (1 − r_j)
    log_pi = torch.cat([logsigmoid(z[:, :1]), stay[:, :-1] + logsigmoid(z[:, 1:]), stay[:, -1:]],
                       dim=1)
    return torch.stack(raw, dim=1), log_pi


class LearnedScorePolicy(ExitPolicy):
    """Exit at the first k whose learned score reaches ``thresholds_[k]``; scores cached per trace."""

    def _compute_scores(self, trace: ExitTrace) -> np.ndarray:
        raise NotImplementedError

    def scores(self, trace: ExitTrace) -> np.ndarray:
        """(N, K) learned scores of every sample of the trace."""
        cache = self.__dict__.setdefault("_score_cache", weakref.WeakKeyDictionary())
        if trace not in cache:
            cache[trace] = self._compute_scores(trace)
        return cache[trace]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_score_cache"}

    def exit_mask(self, trace: ExitTrace, samples: np.ndarray) -> np.ndarray:
        s = self.scores(trace)[samples]
        mask = np.zeros(s.shape, dtype=bool)
        mask[:, :-1] = s[:, :-1] >= self.thresholds_[None, :]
        return mask


class EENet(LearnedScorePolicy):
    """EENet's learned scheduler for an average per-sample budget ``budget_ms`` (ms)."""

    name = "eenet"

    def __init__(self, budget_ms: float, costs: Sequence[float], n_fits: int = 3,
                 epochs: int = 150, lr: float = 1e-2, weight_decay: float = 1e-2,
                 batch_size: int = 512, phase_epochs: int = 10, hidden_scale: float = 0.5,
                 seed: int = 0):
        self.budget_ms = budget_ms
        self.costs = costs
        self.n_fits = n_fits
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.phase_epochs = phase_epochs
        self.hidden_scale = hidden_scale
        self.seed = seed

    def fit(self, trace: ExitTrace, split: str = "val") -> EENet:
        c = check_costs(self.costs, trace.n_exits)
        if self.budget_ms < c[0]:
            raise InputError("policy", "budget_ms", f"{self.budget_ms} ms is below the first "
                             f"exit's cost {c[0]:.4g} ms", budget_range(c))
        if trace.n_exits < 2:
            raise InputError(trace.source, "pred", "EENet needs at least two exits",
                             "use a multi-exit trace")
        import torch

        ids = trace.indices(split)
        sm, mx, conf = eenet_features(trace)
        feats = (sm[ids], mx[ids], conf[ids])
        correct = torch.as_tensor(trace.correct[ids], dtype=torch.float32)
        from offramp.common.pool import map_independent

        # The seeds are independent fits, each single-threaded: spread over processes (the
        # same numbers wherever one runs).
        fits = map_independent(_fit_in_one_thread, [(self, feats, correct, c, self.seed + i)
                                                    for i in range(self.n_fits)])
        within = [f for f in fits if abs(f["cost"] - self.budget_ms) <= COST_SLACK * self.budget_ms]
        best = (max(within, key=lambda f: f["accuracy"]) if within
                else min(fits, key=lambda f: abs(f["cost"] - self.budget_ms)))
        self.net_ = best["net"]
        self.thresholds_ = best["thresholds"]
        self.fractions_ = best["fractions"]
        self.val_cost_ms_ = best["cost"]
        self.val_accuracy_ = best["accuracy"]
        self.fits_ = [{"cost_ms": f["cost"], "accuracy": f["accuracy"]} for f in fits]
        self.__dict__.pop("_score_cache", None)
        return super().fit(trace, split)

    def _fit_once(self, feats, correct: torch.Tensor, costs: np.ndarray, seed: int) -> dict:
        """One fit from ``seed`` (what :func:`_fit_in_one_thread` runs)."""
        import torch
        from torch import nn

        torch.manual_seed(seed)
        n, k_exits = correct.shape
        net = _scheduler(k_exits, feats[0].shape[2], self.hidden_scale)
        opt_q = torch.optim.AdamW(net["score"].parameters(), lr=self.lr,
                                  weight_decay=self.weight_decay)
        opt_r = torch.optim.AdamW(net["assign"].parameters(), lr=self.lr,
                                  weight_decay=self.weight_decay)
        c = torch.as_tensor(costs, dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(self.epochs):
            q_phase = (epoch // self.phase_epochs) % 2 == 0
            opt = opt_q if q_phase else opt_r
            for batch in torch.randperm(n, generator=gen).split(self.batch_size):
                raw, log_pi = _forward(net, *(f[batch] for f in feats))
                opt.zero_grad()
                if q_phase:
                    pi = log_pi.detach().exp()
                    w = pi / pi.sum(dim=0, keepdim=True).clamp_min(1e-12)
                    q = raw.clamp(1e-6, 1 - 1e-6)
                    bce = nn.functional.binary_cross_entropy(q, correct[batch], reduction="none")
                    loss = (w * bce).sum(dim=0).mean()
                else:
                    t = raw.detach().clamp(1e-6, 1.0)
                    t = t / t.sum(dim=1, keepdim=True)
                    kl = (t * (t.log() - log_pi)).sum(dim=1).mean()
                    cost = (log_pi.exp() @ c).mean()
                    loss = 1e-3 * kl + 1e-2 * (cost - self.budget_ms).abs() / self.budget_ms
                loss.backward()
                opt.step()
        with torch.no_grad():
            raw, log_pi = _forward(net, *feats)
        scores = raw.numpy().astype(np.float64)
        fractions = log_pi.exp().mean(dim=0).numpy().astype(np.float64)
        fractions /= fractions.sum()
        thresholds = from_fractions(scores, fractions)
        mask = scores[:, :-1] >= thresholds[None, :]
        exits = np.concatenate([mask, np.ones((n, 1), dtype=bool)], axis=1).argmax(axis=1)
        ok = correct.numpy()[np.arange(n), exits]
        return {"net": net, "thresholds": thresholds, "fractions": fractions,
                "cost": average_cost(exits, costs), "accuracy": float(ok.mean())}

    def _compute_scores(self, trace: ExitTrace) -> np.ndarray:
        import torch

        with torch.no_grad():
            raw, _ = _forward(self.net_, *eenet_features(trace))
        return raw.numpy().astype(np.float64)

    def fitted_params(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds_, "fractions": self.fractions_,
                "val_cost_ms": self.val_cost_ms_, "val_accuracy": self.val_accuracy_}

    def explain(self) -> str | None:
        """The budget against the range the exits allow, and the fit kept."""
        if not hasattr(self, "fits_"):
            return None
        c = np.asarray(self.costs, dtype=float)
        within = sum(abs(f["cost_ms"] - self.budget_ms) <= COST_SLACK * self.budget_ms
                     for f in self.fits_)
        return (f"budget {self.budget_ms:.4g} ms per sample, of the {c[0]:.4g}-{c[-1]:.4g} ms "
                f"the exits allow; kept the most accurate of {within} of {len(self.fits_)} fits "
                f"within {COST_SLACK:.0%} of it (val cost {self.val_cost_ms_:.4g} ms, "
                f"val accuracy {self.val_accuracy_:.4f})" if within else
                f"budget {self.budget_ms:.4g} ms per sample, of the {c[0]:.4g}-{c[-1]:.4g} ms "
                f"the exits allow; no fit came within {COST_SLACK:.0%} of it: kept the closest "
                f"(val cost {self.val_cost_ms_:.4g} ms)")


def _fit_in_one_thread(policy: EENet, feats, correct, costs: np.ndarray, seed: int) -> dict:  # noqa: ANN001
    """``policy._fit_once`` on one torch thread (in this process or a pool worker): the same
    numbers either way."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return policy._fit_once(feats, correct, costs, seed)
    finally:
        torch.set_num_threads(threads)
