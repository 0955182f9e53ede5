"""Latency and throughput against concurrency, as perf_analyzer measures a server: the study
served by N closed-loop clients (each sends its next request when the last one returns, after
``think_ms``), for each N."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from offramp.analysis.studies.compare import run_grid
from offramp.analysis.study.config import StudyConfig
from offramp.common.errors import InputError

METRICS = ("throughput_rps", "latency_mean_ms", "latency_p50_ms", "latency_p90_ms",
           "latency_p95_ms", "latency_p99_ms", "accuracy", "utilisation", "batch_size_stage_0")


def parse_clients(text: str) -> list[int]:
    """``1,2,4`` or ``1-8`` (every count) or ``1-64:x2`` (doubling): the client counts."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, rest = part.partition("-")
        try:
            if not sep:
                out.append(int(lo))
                continue
            hi, _, step = rest.partition(":")
            a, b = int(lo), int(hi)
            if step.startswith("x"):
                k, n = float(step[1:]), a
                if k <= 1:
                    raise ValueError
                while n <= b:
                    out.append(n)
                    n = max(n + 1, round(n * k))
            else:
                out += list(range(a, b + 1, int(step) if step else 1))
        except ValueError:
            raise InputError("--clients", part, "is not N, A-B, A-B:STEP or A-B:xFACTOR (with "
                             "FACTOR > 1)", "e.g. --clients 1,2,4,8 or 1-64:x2") from None
        if sep and int(lo) > int(rest.partition(":")[0]):
            raise InputError("--clients", part, "is an empty range (A must be <= B)",
                             "e.g. 1-64:x2")
    if not out or min(out) < 1:
        raise InputError("--clients", text, "needs client counts of at least 1", "e.g. 1-64:x2")
    return sorted(set(out))


def concurrency_sweep(cfg: StudyConfig, base: Path | None, clients: Sequence[int],
                      think_ms: float = 0.0, progress: Callable[[], None] | None = None
                      ) -> pd.DataFrame:
    """One row per client count: throughput and latency percentiles (means over the study's
    replications, with 95% CIs), accuracy, busy fraction, first-stage batch size."""
    variants = [{"workload": {"kind": "closed", "clients": int(n), "think_ms": think_ms}}
                for n in clients]
    frame = run_grid(cfg, variants, base, progress, METRICS)
    frame.insert(0, "concurrency", list(clients))
    return frame.drop(columns=["rate_rps"])
