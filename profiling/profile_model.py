"""Measure a multi-exit model with one backend into a validated latency profile: the isolated
stages (:mod:`.measure`), the serving loop's own (:mod:`.loop_timing`) and the provenance.
This module runs on a bare CUDA box: it imports torch, numpy and the standard library only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .backends import get_backend
from .backends.base import EXIT_THRESHOLD, Backend
from .format import LatencyProfile, validate_profile
from .loop_timing import measure_loop
from .measure import Progress, RunPolicy, measure_stages, stage_plan, times_loop_stages
from .provenance import device_info, input_description, software_versions


def profile_model(model: nn.Module, backend_name: str, device: str, precision: str,
                  example: Callable[[int], Any], batches: Sequence[int], policy: RunPolicy,
                  command: str, extra_meta: dict[str, Any] | None = None,
                  workdir: str | Path | None = None,
                  progress: Progress | None = None, loop_rule: str = "maxprob"
                  ) -> LatencyProfile:
    """Measure ``model`` with one backend and return a validated :class:`LatencyProfile`.

    ``loop_rule``: the exit rule whose decision the in-loop ``check`` stage times (see
    :func:`measure_loop`).
    ``example(b)`` gives an input batch of size b; ``command`` is recorded as how the profile
    was produced; ``extra_meta`` (e.g. weights, thread count) is merged into the metadata.
    """
    batches = sorted(set(batches))
    backend = get_backend(backend_name)(model, device, precision, workdir=workdir)
    backend.setup(example(2), batches)
    in_loop = times_loop_stages(backend_name)
    rows = measure_stages(backend, example, batches, policy, progress=progress,
                          overhead=not in_loop)
    loop_meta: dict[str, Any] = {"loop_stages": f"not measured: backend {backend_name} has no "
                                 "serving loop here; overhead is the isolated exit check"}
    if in_loop:
        loop_rows, residual = measure_loop(backend, example, batches, policy, rows, progress,
                                           rule=loop_rule)
        wake = residual.pop("wake_ms")
        corr = residual.pop("stage_noise_corr")
        tail = residual.pop("batch_tail_ms")
        order = {key: i for i, key in enumerate(stage_plan(backend.n_exits, batches, True))}
        rows = sorted(rows + loop_rows, key=lambda r: order[r["kind"], r["k"], r["batch"]])
        loop_meta = {"loop_stages": "overhead, check and handoff timed inside the serving loop "
                     "(offramp.profiling.serving_loop, exit mode shrink, no sample exits)",
                     "in_loop_residual_ms": residual, "wake_ms": wake,
                     "stage_noise_corr": corr, "batch_tail_ms": tail, "loop_rule": loop_rule}
    meta = _profile_meta(model, backend, backend_name, device, precision, example, batches,
                         policy, command)
    meta.update(loop_meta, backend_details=backend.describe())
    meta.update(extra_meta or {})
    profile = LatencyProfile(rows=rows, meta=meta)
    validate_profile(profile)
    return profile


def _profile_meta(model: nn.Module, backend: Backend, backend_name: str, device: str,
                  precision: str, example: Callable[[int], Any], batches: Sequence[int], policy: RunPolicy,
                  command: str) -> dict[str, Any]:
    """A measured profile's metadata: what, on what, with what, how and when."""
    inputs = input_description(example(1))
    meta = {
        "model_id": getattr(model, "model_id", type(model).__name__),
        "n_exits": backend.n_exits,
        "exit_names": list(getattr(model, "exit_names", [])),
        **device_info(device),
        "torch": torch.__version__,
        "backend": backend_name,
        "precision": precision,
        "input_shape": inputs[0]["shape"],
        "inputs": inputs,
        "software": software_versions(backend),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "produced_by": {"command": command},
        "synthetic": False,
        "timer": "CUDA events (overhead: perf_counter_ns)" if device == "cuda"
        else "perf_counter_ns",
        "torch_threads": torch.get_num_threads(),
        "run_policy": asdict(policy),
        "batches": list(batches),
        "compact_source_batch": max(batches),
        "overhead_stage": "assemble the batch from single requests and place it on the device"
                          if backend_name == "eager" else f"softmax max >= {EXIT_THRESHOLD} on the "
                          "last head's logits, mask to host, survivor indices back to the device",
        "check_stage": "softmax max >= the exit's threshold, mask to host, survivor indices "
                       "back to the device",
    }
    return meta
