"""Measurement backends by name; each module is imported only when its backend is used."""

from __future__ import annotations

import importlib

from offramp.common.errors import InputError

from .base import Backend

BACKENDS = {
    "eager": ("offramp.profiling.backends.eager", "EagerBackend"),
    "cudagraph": ("offramp.profiling.backends.cudagraph", "CudaGraphBackend"),
    "onnxruntime": ("offramp.profiling.backends.onnxruntime", "OnnxRuntimeBackend"),
    "tensorrt": ("offramp.profiling.backends.tensorrt", "TensorRTBackend"),
}


def backend_names() -> list[str]:
    """Names of the registered backends."""
    return list(BACKENDS)


def get_backend(name: str) -> type[Backend]:
    """The backend class registered as ``name``; :class:`InputError` for an unknown name."""
    if name not in BACKENDS:
        raise InputError("--backend", None, f"unknown backend {name!r}",
                         f"use one of {', '.join(BACKENDS)}")
    module, attr = BACKENDS[name]
    return getattr(importlib.import_module(module), attr)


__all__ = ["BACKENDS", "Backend", "backend_names", "get_backend"]
