"""EENet (WACV'24): a learned early-exit scheduler trained under an average cost budget.

As published (``reference/eenet.md`` and the public code, git-disl/EENet): per exit k a linear
score head q̂_k (no bias) over [softmax_k, max_k, conf_k, q̂_0 … q̂_{k−1}] (earlier exits' scores
clamped to [0, 1] and detached), initialised to q̂ = max probability; per early exit an
assignment head r_k = σ(MLP) over the same features, with a sigmoid hidden layer of width
``hidden_scale`` × input width. Sequential exit distribution π_k = r_k Π_{j<k}(1 − r_j), the
last exit takes the remainder. Losses: a q phase (π-weighted BCE of q̂ against correctness,
weights normalised over the batch's samples, averaged over exits) and an r phase (1e-3·KL(t ‖ π)
averaged over every sample and exit, t ∝ q̂ detached; plus 1e-2·|mean Σ π c − B| / B),
alternating every ``phase_epochs`` epochs (q phase first), one Adam optimiser (lr 3e-5, L2
weight decay 1e-2), batch 512, up to 1000 epochs. The epoch of least total loss among those
whose cost loss is under 0.1 is kept; training stops after 100 such epochs without a better
one (epochs whose cost loss is 0.1 or more neither count nor stop it, as in the public code).
Thresholds: the sequential top-n calibration on the learned scores with fractions = mean π; of
``n_fits`` (10) fits the most accurate on val is kept.

Departures, each stated in docs/policies.md: the achieved val cost never exceeds B — where a
fit's calibrated thresholds overspend, every threshold is lowered by the least common amount
that brings its val cost within B (the paper keeps fits within 10 % of B, either side); the
public code's defects are avoided (gradients zeroed every step; π the sequential product, not a
softmax over r; the kept epoch's weights copied, not the live model; the last exit takes every
sample that reaches it). ``decoupled_weight_decay=True`` with ``lr=1e-2`` and 150 epochs is the
CPU-tuned variant offramp used before (AdamW: with coupled L2 the decay dominates the tiny
r-phase loss at a large learning rate).

The geometric ``exp`` exit distribution baseline and the budget rule live in :mod:`.budget`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from offramp.common.errors import InputError
from offramp.common.pool import Pending, start_independent
from offramp.traces.format import ExitTrace

from .budget import budget_costs, exits_for, within_budget
from .costs import average_cost
from .eenet_train import groups
from .learned import LearnedScorePolicy
from .thresholds import from_fractions

if TYPE_CHECKING:  # torch is imported when a policy is fitted, not with the package
    import torch
    from torch import nn



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
        width = n_classes + 2 + k
        hidden = max(2, int(width * hidden_scale))
        assign.append(nn.Sequential(nn.Linear(width, hidden), nn.Sigmoid(), nn.Linear(hidden, 1)))
    return nn.ModuleDict({"score": score, "assign": assign})


def _forward(net: nn.ModuleDict, sm: torch.Tensor, mx: torch.Tensor, conf: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw scores (n, K), log π (n, K)) of one fit: the group forward of
    :mod:`.eenet_train` for a group of one (one home for the rule; bit-identical to the
    heads applied one by one on the shipped traces)."""
    from .eenet_train import forward, inputs, stack

    raw, log_pi = forward([p.detach() for p in stack([net])], inputs(sm, mx, conf)[:, None])
    return raw[0], log_pi[0]


def paper_hidden_scale(trace: ExitTrace) -> float:
    """The assignment heads' hidden width per input the paper uses for the trace's model: 2
    for a transformer (its BERT setting), 0.5 otherwise (its CNN setting)."""
    from offramp.traces.shipped import model_family

    return 2.0 if model_family(str(trace.meta.get("model_id", ""))) == "transformer" else 0.5


class EENet(LearnedScorePolicy):
    """EENet's learned scheduler for an average per-sample budget ``budget_ms`` (ms)."""

    name = "eenet"

    def __init__(self, budget_ms: float, costs: Sequence[float], n_fits: int = 10,
                 epochs: int = 1000, lr: float = 3e-5, weight_decay: float = 1e-2,
                 batch_size: int = 512, phase_epochs: int = 10, hidden_scale: float | None = None,
                 seed: int = 0, decoupled_weight_decay: bool = False):
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
        self.decoupled_weight_decay = decoupled_weight_decay

    def fit(self, trace: ExitTrace, split: str = "val") -> EENet:
        return self.fit_together([self], trace, split)[0]

    @classmethod
    def fit_together(cls, policies: Sequence[EENet], trace: ExitTrace, split: str = "val"
                     ) -> list[EENet]:
        """Fit EENet policies, each to its own budget, the fits of those that share every other
        setting trained side by side (:mod:`.eenet_train`): every (budget, seed) fit in fixed
        contiguous groups (:func:`.eenet_train.groups`, the order of ``policies`` then seeds), the
        groups spread over the process pool. Each fit follows its own seed's path whatever it is
        trained beside (to float rounding), so a frontier of five budgets gives the fits five
        separate ``fit`` calls give, in less time. Returns ``policies``, fitted."""
        return cls.start_together(policies, trace, split).collect()

    @classmethod
    def start_together(cls, policies: Sequence[EENet], trace: ExitTrace, split: str = "val"
                       ) -> Pending:
        """:meth:`fit_together` started: the groups go to the process pool now (where it is
        used); ``collect()`` waits for them and keeps each policy's best fit, ``cancel()`` drops
        the groups not begun; the caller may fit other policies meanwhile. Bad budgets fail
        here, at once."""
        import torch

        if trace.n_exits < 2:
            raise InputError(trace.source, "pred", "EENet needs at least two exits",
                             "use a multi-exit trace")
        sets: dict[tuple, list[EENet]] = {}
        for pol in policies:
            budget_costs(pol.costs, trace.n_exits, pol.budget_ms)  # one clear error per bad budget
            pol.hidden_scale_ = (paper_hidden_scale(trace) if pol.hidden_scale is None
                                 else pol.hidden_scale)
            sets.setdefault(pol._shared(), []).append(pol)
        ids = trace.indices(split)
        sm, mx, conf = eenet_features(trace)
        feats = (sm[ids], mx[ids], conf[ids])
        correct = torch.as_tensor(trace.correct[ids], dtype=torch.float32)
        started = []
        for same in sets.values():
            first = same[0]
            c = budget_costs(first.costs, trace.n_exits, first.budget_ms)
            fits = [(first.seed + i, pol.budget_ms) for pol in same for i in range(first.n_fits)]
            # The fits are independent, trained in fixed groups, each single-threaded: spread
            # over processes (the same numbers wherever one runs).
            started.append((same, start_independent(_fit_in_one_thread, [
                (first, feats, correct, c, g) for g in groups(fits)])))

        def collect() -> list[EENet]:
            for same, work in started:
                n_fits = same[0].n_fits
                done = [fit for group in work.results() for fit in group]
                for j, pol in enumerate(same):
                    pol._keep_best(done[j * n_fits:(j + 1) * n_fits])
                    LearnedScorePolicy.fit(pol, trace, split)
            return list(policies)

        def cancel() -> None:
            for _, work in started:
                work.cancel()

        return Pending(collect, cancel)

    def _shared(self) -> tuple:
        """What fits of different budgets must share to be trained side by side."""
        return (tuple(np.asarray(self.costs, dtype=float).tolist()), self.n_fits, self.epochs,
                self.lr, self.weight_decay, self.batch_size, self.phase_epochs,
                self.hidden_scale_, self.seed, self.decoupled_weight_decay)

    def _keep_best(self, fits: list[dict]) -> None:
        best = max(fits, key=lambda f: f["accuracy"])  # every fit is within the budget on val
        self.net_ = best["net"]
        self.thresholds_ = best["thresholds"]
        self.fractions_ = best["fractions"]
        self.val_cost_ms_ = best["cost"]
        self.val_accuracy_ = best["accuracy"]
        self.fits_ = [{k: f[k] for k in ("cost", "accuracy", "lowered_by", "epochs", "kept_epoch",
                                        "nominal_cost")} for f in fits]
        self.__dict__.pop("_score_cache", None)

    def _fit_group(self, feats, correct: torch.Tensor, costs: np.ndarray,
                   fits: list[tuple[int, float]]) -> list[dict]:
        """The fits (seed, budget in ms), trained together (:mod:`.eenet_train`), each then
        calibrated to its budget on val."""
        import torch

        from .eenet_train import train

        n, k_exits = correct.shape
        trained = train(self, feats, correct, costs, fits,
                        lambda: _scheduler(k_exits, feats[0].shape[2], self.hidden_scale_))
        out = []
        for (net, epochs, kept_epoch), (_, budget) in zip(trained, fits, strict=True):
            with torch.no_grad():
                raw, log_pi = _forward(net, *feats)
            scores = raw.numpy().astype(np.float64)
            fractions = log_pi.exp().mean(dim=0).numpy().astype(np.float64)
            fractions /= fractions.sum()
            thresholds, lowered = within_budget(scores, from_fractions(scores, fractions), costs,
                                                budget)
            exits = exits_for(scores, thresholds)
            ok = correct.numpy()[np.arange(n), exits]
            out.append({"net": net, "thresholds": thresholds, "fractions": fractions,
                        "cost": average_cost(exits, costs), "accuracy": float(ok.mean()),
                        "lowered_by": lowered, "epochs": epochs, "kept_epoch": kept_epoch,
                        "nominal_cost": float(fractions @ costs)})
        return out

    def _compute_scores(self, trace: ExitTrace) -> np.ndarray:
        import torch

        with torch.no_grad():
            raw, _ = _forward(self.net_, *eenet_features(trace))
        return raw.numpy().astype(np.float64)

    def fitted_params(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds_, "fractions": self.fractions_,
                "val_cost_ms": self.val_cost_ms_, "val_accuracy": self.val_accuracy_,
                "hidden_scale": self.hidden_scale_}

    def explain(self) -> str | None:
        """The budget against the range the exits allow, and the fit kept."""
        if not hasattr(self, "fits_"):
            return None
        c = np.asarray(self.costs, dtype=float)
        lowered = sum(f["lowered_by"] > 0 for f in self.fits_)
        return (f"budget {self.budget_ms:.4g} ms per sample, of the {c[0]:.4g}-{c[-1]:.4g} ms "
                f"the exits allow; kept the most accurate of {len(self.fits_)} fits (val cost "
                f"{self.val_cost_ms_:.4g} ms, val accuracy {self.val_accuracy_:.4f}); "
                f"{lowered} of them overspent as calibrated and had their thresholds lowered "
                "into the budget")


def _fit_in_one_thread(policy: EENet, feats, correct, costs: np.ndarray,  # noqa: ANN001
                       fits: list[tuple[int, float]]) -> list[dict]:
    """``policy._fit_group`` on one torch thread (in this process or a pool worker): the same
    numbers either way."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return policy._fit_group(feats, correct, costs, fits)
    finally:
        torch.set_num_threads(threads)
