"""EENet's fits trained side by side: a group of fits' score and assignment heads stacked along
a leading fit axis, so that one step of batched matrix products trains every fit of the group.
A group may hold the seeds of several budgets (a frontier's): each fit has its own budget.

Each fit keeps what it has alone (policies/eenet.py): its seed's initialisation and mini-batch
order, its own losses, Adam's element-wise update, its kept epoch and its patience. The fits
share no parameter, so the gradient of the group's summed loss with respect to one fit's
parameters is that fit's own. A fit that stops is dropped from the group (its slice of the
parameters and of Adam's state cut out) while the others train on. What changes is the cost:
PyTorch's per-call overhead dominates these tiny heads, so a step of five fits costs far less
than five steps of one (ten fits at one budget: 2.8× faster, benchmarks/eenet_fit_speed.py).

Groups are fixed by the fits asked for alone (:func:`groups`), never by the machine, so a fit
gives the same numbers wherever its group runs (one process or a pool worker).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

T = TypeVar("T")
FIT_GROUPS = 2  # the seeds are trained in this many groups (the pool runs them side by side)
COST_LOSS_OK = 0.1  # an epoch may be kept once its cost loss |cost − B| / B is under this
PATIENCE = 100  # epochs without a better kept epoch before a fit stops


def groups(fits: list[T]) -> list[list[T]]:
    """The fits in :data:`FIT_GROUPS` contiguous groups (fewer when there are fewer fits)."""
    size = math.ceil(len(fits) / FIT_GROUPS) if fits else 1
    return [fits[i:i + size] for i in range(0, len(fits), size)]


def stack(nets: list[nn.ModuleDict]) -> list[torch.Tensor]:
    """The nets' parameters stacked along a new leading fit axis, as leaf tensors: per exit the
    score weight (F, 1, W), then per early exit (w1, b1, w2, b2)."""
    import torch

    def cat(get: Any) -> torch.Tensor:
        return torch.stack([get(n).detach().clone() for n in nets]).requires_grad_(True)

    out = [cat(lambda n, k=k: n["score"][k].weight) for k in range(len(nets[0]["score"]))]
    for k in range(len(nets[0]["assign"])):
        for part in ((0, "weight"), (0, "bias"), (2, "weight"), (2, "bias")):
            out.append(cat(lambda n, k=k, part=part: getattr(n["assign"][k][part[0]], part[1])))
    return out


def load_into(net: nn.ModuleDict, params: list[torch.Tensor], f: int) -> nn.ModuleDict:
    """``net`` (the same architecture) with fit ``f``'s weights of ``params``."""
    import torch

    k_exits = len(net["score"])
    with torch.no_grad():
        for k in range(k_exits):
            net["score"][k].weight.copy_(params[k][f])
        for k in range(k_exits - 1):
            w1, b1, w2, b2 = params[k_exits + 4 * k:k_exits + 4 * k + 4]
            net["assign"][k][0].weight.copy_(w1[f])
            net["assign"][k][0].bias.copy_(b1[f])
            net["assign"][k][2].weight.copy_(w2[f])
            net["assign"][k][2].bias.copy_(b2[f])
    return net


def inputs(sm: torch.Tensor, mx: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """Every exit's own features, exit-major: (K, n, C + 2) = [softmax_k, max_k, conf_k] per
    sample (built once, so a batch is one gather)."""
    import torch

    return torch.cat([sm, mx[..., None], conf[..., None]], dim=2).transpose(0, 1).contiguous()


def forward(params: list[torch.Tensor], xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """policies/eenet.py's forward for every fit at once: ``xs`` (K, F, B, C + 2) the exits'
    own features (:func:`inputs`) per fit; returns (raw scores (F, B, K), log π (F, B, K))."""
    import torch
    from torch.nn.functional import logsigmoid

    k_exits = xs.shape[0]
    prev: list[torch.Tensor] = []
    raw, logits = [], []
    for k in range(k_exits):
        x = torch.cat([xs[k], *prev], dim=2) if prev else xs[k]
        q = torch.bmm(x, params[k].transpose(1, 2))
        raw.append(q[..., 0])
        if k < k_exits - 1:
            w1, b1, w2, b2 = params[k_exits + 4 * k:k_exits + 4 * k + 4]
            h = torch.sigmoid(torch.baddbmm(b1.unsqueeze(1), x, w1.transpose(1, 2)))
            logits.append(torch.baddbmm(b2.unsqueeze(1), h, w2.transpose(1, 2))[..., 0])
        prev.append(q.clamp(0.0, 1.0).detach())
    z = torch.stack(logits, dim=2)
    stay = logsigmoid(-z).cumsum(dim=2)  # log Π_{j≤k} (1 − r_j)
    log_pi = torch.cat([logsigmoid(z[..., :1]), stay[..., :-1] + logsigmoid(z[..., 1:]),
                        stay[..., -1:]], dim=2)
    return torch.stack(raw, dim=2), log_pi


def losses(params: list[torch.Tensor], xs: torch.Tensor, correct: torch.Tensor,
           c: torch.Tensor, budget_ms: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per fit (F,): BCE, KL and cost loss of one batch (policies/eenet.py's definitions);
    ``budget_ms`` (F,): each fit's budget."""
    from torch import nn

    raw, log_pi = forward(params, xs)
    pi = log_pi.detach().exp()
    w = pi / pi.sum(dim=1, keepdim=True).clamp_min(1e-12)
    q = raw.clamp(1e-6, 1 - 1e-6)
    bce = nn.functional.binary_cross_entropy(q, correct, reduction="none")
    t = raw.detach().clamp(1e-6, 1.0)
    t = t / t.sum(dim=2, keepdim=True)
    kl = (t * (t.log() - log_pi)).mean(dim=(1, 2))  # KLDivLoss's mean: every sample and exit
    cost = (log_pi.exp() @ c).mean(dim=1)
    return (w * bce).sum(dim=1).mean(dim=1), kl, (cost - budget_ms).abs() / budget_ms


class _Live:
    """The fits of a group still training: their stacked parameters, optimiser and batch
    orders. A fit that stops is dropped (:meth:`drop`), its slice of every parameter and of
    Adam's state cut out; Adam's update is element-wise, so the others go on as before."""

    def __init__(self, policy: Any, params: list[torch.Tensor], gens: list, budgets: list[float]):
        import torch

        self.policy, self.params, self.gens = policy, params, gens
        self.ids = list(range(len(gens)))
        self.budget = torch.tensor(budgets, dtype=torch.float32)
        self.opt = self._optimiser(params)

    def _optimiser(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        import torch

        pol = self.policy
        kind = torch.optim.AdamW if pol.decoupled_weight_decay else torch.optim.Adam
        return kind(params, lr=pol.lr, weight_decay=pol.weight_decay)

    def drop(self, stopped: set[int]) -> None:
        """Stop training the fits ``stopped`` (ids)."""
        import torch

        keep = [i for i, f in enumerate(self.ids) if f not in stopped]
        rows = torch.tensor(keep)
        old_params, old_state = self.params, self.opt.state
        self.params = [p.detach()[rows].clone().requires_grad_(True) for p in old_params]
        self.opt = self._optimiser(self.params)
        for new, old in zip(self.params, old_params, strict=True):
            st = old_state.get(old)
            if st:
                self.opt.state[new] = {k: (v.clone() if v.dim() == 0 else v[rows].clone())
                                       for k, v in st.items()}
        self.ids = [self.ids[i] for i in keep]
        self.gens = [self.gens[i] for i in keep]
        self.budget = self.budget[rows]

    def epoch(self, xs: torch.Tensor, correct: torch.Tensor, c: torch.Tensor, q_phase: bool
              ) -> list[list[float]]:
        """One epoch of every live fit; per live fit its mean (BCE, KL, cost loss)."""
        import torch

        n, pol = correct.shape[0], self.policy
        sums = torch.zeros(len(self.ids), 3)
        orders = torch.stack([torch.randperm(n, generator=g) for g in self.gens])
        batches = orders.split(pol.batch_size, dim=1)
        for idx in batches:
            rows = idx.reshape(-1)
            bce, kl, cost_loss = losses(self.params,
                                        xs.index_select(1, rows).view(*xs.shape[:1], *idx.shape,
                                                                      xs.shape[2]),
                                        correct.index_select(0, rows).view(*idx.shape, -1), c,
                                        self.budget)
            loss = bce if q_phase else 1e-3 * kl + 1e-2 * cost_loss
            self.opt.zero_grad()
            loss.sum().backward()
            self.opt.step()
            sums += torch.stack([bce.detach(), kl.detach(), cost_loss.detach()], dim=1)
        return (sums / len(batches)).tolist()


def train(policy: Any, feats: tuple, correct: torch.Tensor, costs: np.ndarray,
          fits: list[tuple[int, float]], make_net: Any) -> list[tuple[nn.ModuleDict, int, int]]:
    """Train one fit per (seed, budget in ms) of ``fits`` together (the policy's other
    settings shared); per fit (net with its kept weights, epochs run, kept epoch, 0 when none
    was kept). ``make_net()`` builds one fit's untrained heads."""
    import torch

    nets = []
    for seed, _ in fits:
        torch.manual_seed(seed)
        nets.append(make_net())
    live = _Live(policy, stack(nets), [torch.Generator().manual_seed(s) for s, _ in fits],
                 [b for _, b in fits])
    c = torch.as_tensor(costs, dtype=torch.float32)
    xs = inputs(*feats)
    n_fits = len(fits)
    best: list[list[torch.Tensor] | None] = [None] * n_fits
    best_loss, best_epoch = [np.inf] * n_fits, [-1] * n_fits
    left, ran = [PATIENCE] * n_fits, [policy.epochs] * n_fits
    for epoch in range(policy.epochs):
        means = live.epoch(xs, correct, c, (epoch // policy.phase_epochs) % 2 == 0)
        stopped = set()
        for pos, (f, (bce_m, kl_m, cost_m)) in enumerate(zip(live.ids, means, strict=True)):
            if cost_m >= COST_LOSS_OK:
                continue  # an epoch that may not be kept
            total = bce_m + 1e-3 * kl_m + 1e-2 * cost_m
            if total < best_loss[f]:
                best[f] = [p[pos].detach().clone() for p in live.params]
                best_loss[f], best_epoch[f], left[f] = total, epoch, PATIENCE
            else:
                left[f] -= 1
                if left[f] == 0:
                    ran[f] = epoch + 1
                    stopped.add(f)
        if len(stopped) == len(live.ids):
            break
        if stopped:
            live.drop(stopped)
    out = []
    for f, net in enumerate(nets):
        kept = best[f]
        weights = ([p[live.ids.index(f)] for p in live.params] if kept is None else kept)
        out.append((load_into(net, [w.detach().unsqueeze(0) for w in weights], 0), ran[f],
                    best_epoch[f] + 1))
    return out
