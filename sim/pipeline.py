"""Choosing E3's pipeline split: which consecutive segments go on which group of GPUs.

A request runs segment k only if it has not exited before: ``reach[k]`` of the requests do.
Each one costs ``per_sample_ms[k]`` of GPU time there (the segment, and its exit's head and
decision where the policy consults it, per sample of a full ``max_batch`` batch). A group g
of segments therefore carries ``work_g = Σ_{k∈g} reach[k] · per_sample_ms[k]`` ms per request,
and with ``replicas_g`` GPUs it keeps up with at most ``replicas_g / work_g`` requests per ms.
E3's rule — keep every stage's batch full — is to give each group GPUs in proportion to its
work, so that no group starves while another queues: the split chosen here maximises the
pipeline's bound ``min_g replicas_g / work_g`` over every way of cutting the segments into two
or more consecutive groups and sharing the GPUs among them (ties: fewer groups, so fewer moves
between GPUs). The same GPUs as data-parallel replicas have the same bound (the total work
over the total GPUs) if every replica's late batches were full too; what a pipeline gains is
those fuller late batches at the same latency (the survivors of all replicas' batches meet on
fewer GPUs), which only the simulator measures: compare the split with ``server.replicas``
at the SLO (``offramp capacity --compare``). The moves between groups are left out of the
bound; the simulator has them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Split:
    """Groups of consecutive segments, the GPUs of each, and their work (ms per request)."""

    groups: tuple[tuple[int, ...], ...]
    replicas: tuple[int, ...]
    work_ms: tuple[float, ...]

    @property
    def bound_rps(self) -> float:
        """The most requests per second the split keeps up with (full batches, no moves)."""
        return 1000.0 * min(r / w if w > 0 else float("inf")
                            for r, w in zip(self.replicas, self.work_ms, strict=True))

    def config(self) -> list[dict]:
        """As a study's ``server.pipeline``."""
        return [{"segments": list(g), "replicas": r}
                for g, r in zip(self.groups, self.replicas, strict=True)]


def _compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
    """Every way of writing ``total`` as ``parts`` positive integers, in order."""
    if parts == 1:
        yield (total,)
        return
    for first in range(1, total - parts + 2):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


def choose_split(reach: Sequence[float], per_sample_ms: Sequence[float], gpus: int) -> Split:
    """The pipeline (two groups or more) of ``len(reach)`` segments over ``gpus`` GPUs with
    the highest bound."""
    n = len(reach)
    if gpus < 2 or n < 2:
        raise ValueError("a pipeline needs 2 GPUs or more and a model of 2 segments or more")
    work = [r * c for r, c in zip(reach, per_sample_ms, strict=True)]
    best: Split | None = None
    for n_groups in range(2, min(n, gpus) + 1):
        for cuts in _compositions(n, n_groups):
            bounds = [sum(cuts[:i]) for i in range(n_groups + 1)]
            groups = tuple(tuple(range(a, b)) for a, b in zip(bounds, bounds[1:], strict=False))
            work_g = tuple(sum(work[k] for k in g) for g in groups)
            for reps in _compositions(gpus, n_groups):
                split = Split(groups, reps, work_g)
                if best is None or split.bound_rps > best.bound_rps * (1 + 1e-9):
                    best = split
    assert best is not None
    return best
