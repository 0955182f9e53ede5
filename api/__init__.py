"""offramp: a discrete-event simulator and policy optimizer for serving multi-exit DNNs with
batching. This is its Python API, the twin of every command (docs/api.md)::

    import offramp

    study = offramp.load_study("examples/fmnist-entropy-shrink.yaml", {"run.requests": 20000})
    run = offramp.simulate(study)
    run.summary["latency_p99_ms"], run.summary.ci95("latency_p99_ms")
    run.summary.to_frame()
    offramp.capacity(study, slo_p99_ms=25).capacity_rps

Names are imported on first use, so ``import offramp`` (and the CLI) stays fast.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("offramp")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Capacity", "Run", "Study", "Summary", "__version__", "capacity", "fit_policy",
           "load_profile", "load_study", "load_trace", "optimize", "report", "simulate",
           "sweep", "validate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module("offramp.twins"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'offramp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
