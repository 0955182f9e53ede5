"""offramp: a discrete-event simulator and policy optimizer for serving multi-exit DNNs with
batching. This is its Python API, the twin of every study command (docs/api.md)::

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

__all__ = ["Capacity", "Frontier", "Run", "Study", "Summary", "__version__", "capacity",
           "concurrency", "demo", "fit_policy", "frontier", "load_profile", "load_study",
           "load_trace", "optimize", "pipeline", "report", "simulate", "sweep", "validate"]
# The twins of the commands that compare many runs live in offramp.study_twins.
_STUDY_TWINS = {"Frontier", "concurrency", "demo", "frontier", "pipeline"}


def __getattr__(name: str) -> Any:
    if name in __all__:
        home = "offramp.study_twins" if name in _STUDY_TWINS else "offramp.twins"
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'offramp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
