"""Validated parameters of the serving model: workload, server, service time and run length.

Units are in the field names. Every model forbids unknown fields, so a typo is an error.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from offramp.core.modes import CostModel, Discipline, ExitMode


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class WorkloadConfig(_Strict):
    """Open loop (``poisson``, ``gamma`` with a CV, ``replay`` of recorded arrivals, ``mmpp``
    bursts, a ``diurnal`` rate curve: :mod:`offramp.sim.processes`) or closed loop
    (``closed``: N clients)."""

    kind: Literal["poisson", "gamma", "replay", "mmpp", "diurnal", "closed"] = "poisson"
    rate_rps: float = Field(1000.0, ge=1e-3, le=1e9, description="open loop: mean arrival rate")
    cv: float = Field(1.0, gt=0, description="gamma: coefficient of variation of inter-arrivals")
    clients: int = Field(32, ge=1, le=1_000_000, description="closed loop: number of clients")
    think_ms: float = Field(0.0, ge=0, le=3.6e6,
                            description="closed loop: mean think time (exponential)")
    path: str | None = Field(None, description="replay: CSV or Parquet with column arrival_s "
                             "(seconds, sorted) and optionally sample_id (test-split ids)")
    rate_scale: float = Field(1.0, ge=1e-6, le=1e6, description="replay, mmpp, diurnal: arrivals come "
                              "this many times faster (times divided by it)")
    rates_rps: list[float] | None = Field(None, description="mmpp: arrival rate in each state")
    sojourn_s: list[float] | None = Field(None, description="mmpp: mean time in each state "
                                          "(exponential; states visited in turn)")
    amplitude: float = Field(0.5, ge=0, lt=1, description="diurnal: rate_rps * (1 + amplitude "
                             "* sin(2 pi t / period_s))")
    period_s: float = Field(60.0, gt=0, description="diurnal: period of the sine")
    curve_path: str | None = Field(None, description="diurnal: or a CSV with column rate_rps, "
                                   "one row per minute")
    compress: float = Field(60.0, gt=0, description="diurnal curve: a minute lasts 60 / "
                            "compress seconds")

    FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "poisson": ("rate_rps",), "gamma": ("rate_rps", "cv"), "replay": ("path", "rate_scale"),
        "mmpp": ("rates_rps", "sojourn_s", "rate_scale"),
        "diurnal": ("rate_rps", "amplitude", "period_s", "curve_path", "compress", "rate_scale"),
        "closed": ("clients", "think_ms")}

    @model_validator(mode="after")
    def _replay_has_a_file(self) -> WorkloadConfig:
        if self.kind == "replay" and not self.path:
            raise ValueError("path: kind 'replay' needs a path (a CSV or Parquet of arrival_s)")
        if self.kind == "mmpp":
            r, s = self.rates_rps, self.sojourn_s
            if not r or not s or len(r) != len(s) or len(r) < 2:
                raise ValueError("kind 'mmpp' needs rates_rps and sojourn_s, one per state "
                                 "(at least 2)")
            if min(r) < 0 or max(r) <= 0 or min(s) <= 0:
                raise ValueError("mmpp rates_rps must be >= 0 (one > 0) and sojourn_s > 0")
        elif self.rates_rps is not None or self.sojourn_s is not None:
            raise ValueError("rates_rps and sojourn_s are for kind 'mmpp'")
        if self.curve_path is not None and self.kind != "diurnal":
            raise ValueError("curve_path is for kind 'diurnal'")
        stray = sorted(self.model_fields_set - {"kind"} - set(self.FIELDS[self.kind]))
        if stray:
            raise ValueError(f"kind {self.kind!r} takes no {', '.join(stray)} (its fields: "
                             f"{', '.join(self.FIELDS[self.kind])})")
        return self


class ContentionStep(_Strict):
    """From ``at_s`` on, every stage on the listed replicas (all if None) takes ``factor``×."""

    at_s: float = Field(ge=0)
    factor: float = Field(gt=0, le=1000)
    replicas: list[int] | None = None


class PipelineGroup(_Strict):
    """E3's pipeline: ``segments`` (consecutive) placed on their own ``replicas`` GPUs."""

    segments: list[int] = Field(min_length=1)
    replicas: int = Field(1, ge=1, le=4096)


class ServerConfig(_Strict):
    """Triton-style dynamic batcher and executor on each of ``replicas`` GPUs."""

    max_batch: int = Field(32, ge=1, le=65_536)
    max_wait_ms: float = Field(2.0, ge=0, le=3.6e6)
    exit_mode: ExitMode = Field(ExitMode.SHRINK, strict=False,
                                description="none | keep | shrink | rebatch "
                                "(offramp.core.ExitMode)")
    discipline: Discipline = Field(Discipline.DEEPEST_FIRST, strict=False,
                                   description="rebatch: which ready stage runs next")
    stage_max_wait_ms: float | None = Field(
        None, ge=0, le=3.6e6, description="rebatch: how long survivors wait in front of a "
        "stage for a fuller batch (unset: max_wait_ms)")
    pipeline: list[PipelineGroup] | None = Field(
        None, description="rebatch across GPUs (E3): groups of consecutive segments, each on "
        "its own replicas; replicas is then their total")
    transfer_ms_per_sample: float = Field(
        0.0, ge=0, le=3.6e6, description="pipeline: time to move one sample's activation to "
        "the next group")
    replicas: int = Field(1, ge=1, le=4096)
    routing: Literal["round_robin", "random", "jsq", "shared"] = "round_robin"
    engine_sizes: list[int] | None = Field(
        None, description="batch sizes with an engine; a batch runs on the next size up")
    contention: list[ContentionStep] = Field(
        default_factory=list, description="slowdown schedule (Dynamic-OFA's setting)")

    def slowdown(self) -> list[tuple[list[float], list[float]]]:
        """Per replica: (step times, factors) with a leading (0, 1); factor at t by bisect."""
        out = []
        for r in range(self.replicas):
            steps = sorted((c.at_s, c.factor) for c in self.contention
                           if c.replicas is None or r in c.replicas)
            out.append(([-1.0] + [a for a, _ in steps], [1.0] + [f for _, f in steps]))
        return out

    @property
    def stage_wait_s(self) -> float:
        """rebatch: seconds survivors wait in front of a stage for a fuller batch."""
        wait = self.max_wait_ms if self.stage_max_wait_ms is None else self.stage_max_wait_ms
        return wait / 1000.0

    @model_validator(mode="after")
    def _rebatch_fields(self) -> ServerConfig:
        if not self.exit_mode.rebatches:
            stray = sorted({"discipline", "stage_max_wait_ms", "pipeline",
                            "transfer_ms_per_sample"} & self.model_fields_set)
            if stray:
                raise ValueError(f"{', '.join(stray)}: only for exit_mode rebatch")
        elif self.pipeline is not None:
            total = sum(g.replicas for g in self.pipeline)
            if "replicas" in self.model_fields_set and self.replicas != total:
                raise ValueError(f"replicas: {self.replicas} but the pipeline's groups have "
                                 f"{total}; leave replicas out")
            # replicas is the groups' total; left unset, so a copy without it is the same study
            object.__setattr__(self, "replicas", total)
            segs = [k for g in self.pipeline for k in g.segments]
            if segs != list(range(len(segs))):
                raise ValueError(f"pipeline: segments {segs} must run 0, 1, 2, ... each once, "
                                 "in order, split into groups")
            if "routing" in self.model_fields_set:
                raise ValueError("routing: a pipeline's first group shares the arrivals; "
                                 "leave routing out")
        elif self.routing == "shared" and self.replicas > 1:
            raise ValueError("exit_mode rebatch keeps survivors on their replica: route with "
                             "round_robin, random or jsq (not a shared queue)")
        elif "transfer_ms_per_sample" in self.model_fields_set:
            raise ValueError("transfer_ms_per_sample: only with a pipeline")
        return self

    @model_validator(mode="after")
    def _engines_cover_max_batch(self) -> ServerConfig:
        if self.engine_sizes is not None:
            if not self.engine_sizes or min(self.engine_sizes) < 1:
                raise ValueError("engine_sizes: must be positive batch sizes")
            if max(self.engine_sizes) < self.max_batch:
                raise ValueError(f"engine_sizes: {self.engine_sizes} do not cover "
                                 f"max_batch {self.max_batch}")
        for step in self.contention:
            if step.replicas and not all(0 <= r < self.replicas for r in step.replicas):
                raise ValueError(f"contention: replicas {step.replicas} outside 0..{self.replicas - 1}")
        return self


class ServiceConfig(_Strict):
    """Where stage times come from: the latency profile, or an analytic batch service time.

    ``profile``: each stage from the profile, at its p50 (``latency: p50``) or sampled from the
    measured spread (``latency: sampled``), at the calibration ``costs`` names (``isolated``,
    ``in_loop``, ``served``; unset: the most calibrated one the profile holds).
    ``deterministic`` / ``exponential``: the whole batch takes ``mean_ms`` (fixed or
    exponential), independent of size; for checks against theory.
    """

    kind: Literal["profile", "deterministic", "exponential"] = "profile"
    latency: Literal["p50", "sampled"] = "p50"
    costs: CostModel | None = Field(None, strict=False, description="isolated | in_loop | "
                                    "served; unset: the most calibrated the profile holds")
    mean_ms: float = Field(1.0, gt=0, le=3.6e6)


class RunConfig(_Strict):
    """How long to run, how many independent replications, and which engine."""

    requests: int | None = Field(None, ge=1, le=100_000_000, description="requests per replication "
                                 "(100,000 when neither this nor duration_s is set)")
    duration_s: float | None = Field(None, gt=0, le=1e7, description="or: simulated seconds")
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="first requests left out of stats")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    replications: int = Field(5, ge=1, le=1000)
    engine: Literal["auto", "fast", "reference"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _one_length(cls, data: object) -> object:
        if isinstance(data, dict):
            if data.get("requests") is None and data.get("duration_s") is None:
                data = {**data, "requests": 100_000}
            elif data.get("requests") is not None and data.get("duration_s") is not None:
                raise ValueError("set only one of run.requests and run.duration_s")
        return data
