"""The study config: YAML, validated on load, every field with a default and a unit in its name."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from offramp.common.errors import InputError
from offramp.policies.configs import FromFileConfig, NoneConfig, PolicyConfigBase
from offramp.policies.parse import parse_policy
from offramp.sim.config import RunConfig, ServerConfig, ServiceConfig, WorkloadConfig


class TraceSection(BaseModel):
    """``path``: a trace file (relative to the config file) or a shipped trace's name."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    path: str = "fmnist-resnet"


class ProfileSection(ServiceConfig):
    """``path``: a profile file or shipped name (for ``kind: profile``)."""

    path: str | None = None

    @model_validator(mode="after")
    def _path_for_profile(self) -> ProfileSection:
        if self.kind == "profile" and not self.path:
            raise ValueError("kind 'profile' needs a path (a profile file or a shipped name)")
        if self.kind != "profile" and "path" in self.model_fields_set and self.path:
            raise ValueError(f"an analytic service time (kind {self.kind!r}) reads no profile: "
                             "drop path")
        if self.kind != "profile" and self.costs is not None:
            raise ValueError(f"an analytic service time (kind {self.kind!r}) has no stage "
                             "costs: drop costs")
        return self


class SloSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    latency_ms: float | None = Field(None, gt=0, description="per-request latency objective")


class StudyConfig(BaseModel):
    """A whole study: what to serve, how, under which load, for how long."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    trace: TraceSection = TraceSection()
    profile: ProfileSection = ProfileSection(path="fmnist-resnet-cpu")
    workload: WorkloadConfig = WorkloadConfig()
    server: ServerConfig = ServerConfig()
    policy: SerializeAsAny[PolicyConfigBase] | FromFileConfig = Field(
        NoneConfig(), description="a policy by name and its fitting options (one config class "
        "per policy, policies/configs.py), or from_file: one saved by `offramp fit -o`")
    slo: SloSection = SloSection()
    run: RunConfig = RunConfig()

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_by_name(cls, v: object) -> object:
        return parse_policy(v, allow_file=True)

    @model_validator(mode="after")
    def _analytic_needs_no_exits(self) -> StudyConfig:
        if self.profile.kind != "profile" and self.server.exit_mode.consults_early_exits:
            raise ValueError("an analytic service time (profile.kind "
                             f"{self.profile.kind!r}) has no stages: set server.exit_mode: none")
        return self


def _describe(err: ValidationError) -> tuple[str, str]:
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    # A section-wide check that is about one of its fields names it ("path: ..." -> .path).
    lead = re.match(r"([a-z_]+): ", msg)
    if lead and len(first["loc"]) == 1:
        loc, msg = f"{loc}.{lead.group(1)}", msg[lead.end():]
    return loc, msg


def parse_config(data: Any, source: str = "config") -> StudyConfig:
    """Validate a config mapping; raise one :class:`InputError` naming the field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(source, None, "must be a YAML mapping of sections",
                         "see examples/ for the layout")
    if "policy" in data:
        data = {**data, "policy": parse_policy(data["policy"], source, "policy.", allow_file=True)}
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as err:
        loc, msg = _describe(err)
        extra = f" ({err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise InputError(source, loc, msg + extra,
                         "see the study fields in README.md (Simulating a study) and "
                         "examples/") from None


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: int, again: int):
        super().__init__(key)
        self.key, self.first, self.again = key, first, again


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (plain
    YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001, D102
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)  # YAML merge keys (<<: *anchor) first
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(str(key), seen[key] + 1, key_node.start_mark.line + 1)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file offramp takes as input: UTF-8, no duplicate keys; one
    :class:`InputError` naming the file for anything wrong."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, "no such file", "check the path")
    if path.is_dir():
        raise InputError(path, None, "is a folder, not a YAML file", "pass the .yaml file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, None, f"is not UTF-8 text (byte {exc.start})",
                         "save the file as UTF-8") from None
    except OSError as exc:
        raise InputError(path, None, f"cannot be read ({exc.strerror or exc})",
                         "check the path and its permissions") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as dup:
        raise InputError(path, dup.key, f"is given twice (lines {dup.first} and {dup.again}); "
                         "YAML would keep the last one silently", "keep one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise InputError(path, None, f"not valid YAML ({where}{problem or exc})".replace(
            "\n", " "), "fix the YAML syntax") from None


SECTIONS = ("trace", "profile", "workload", "server", "policy", "slo", "run")


@contextlib.contextmanager
def naming_study(path: str | Path) -> Iterator[None]:
    """Errors raised deeper about a section of the study ("policy", "run") name the study
    file they came from, and the section as part of the field."""
    try:
        yield
    except InputError as exc:
        if exc.source not in SECTIONS:
            raise
        if exc.field and exc.field.split(".")[0] in SECTIONS:  # already a study field
            field = exc.field
        else:
            field = f"{exc.source}.{exc.field}" if exc.field else exc.source
        raise InputError(path, field, exc.problem, exc.fix) from None


def parse_value(raw: str, option: str, item: str) -> Any:
    """A command-line value (``--set``, ``--param``) read as YAML, strictly: not empty, no
    duplicate keys, one document; one :class:`InputError` naming the option otherwise."""
    if not raw.strip():
        raise InputError(option, item, "has no value after '='", f"e.g. {option} "
                         "server.max_batch=16")
    try:
        return yaml.load(raw, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as dup:
        raise InputError(option, item, f"gives key {dup.key!r} twice", "keep one") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InputError(option, item, f"is not a valid YAML value ({problem})".replace(
            "\n", " "), "quote it, or write a number, a word, or [a, list]") from None


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, "no such config file", "check the path")
    data = load_yaml(path)
    if data is None:
        raise InputError(path, None, "is empty", "give at least the trace and profile sections "
                         "(see examples/)")
    return parse_config(data, str(path))
