"""Parsing a policy section into its config class, with one clear error.

A ``policy`` section (or a Python dict) is parsed by :func:`parse_policy` into the class its
``name`` selects: a pydantic union, discriminated on the name, of every config class in the
registry (:data:`offramp.policies.registry.REGISTRY`; ``static:K`` selects
:class:`~offramp.policies.configs.StaticConfig`). A field another policy owns, a required field
left out or a bound broken is one :class:`InputError` naming the policy and the field.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from offramp.common.errors import InputError

from .configs import FromFileConfig, PolicyConfigBase

# The registry (policies/registry.py) hands itself over when it is built: this module never
# imports it (no import cycle); entries are looked up when a policy is parsed.
_REGISTRY: dict[str, Any] = {}


def use_registry(registry: dict[str, Any]) -> None:
    """Parse policies against ``registry`` (name -> entry with ``.config``)."""
    global _REGISTRY
    _REGISTRY = registry


def config_name(config: type[PolicyConfigBase]) -> str:
    """The registry key of a config class: its ``name`` default, without a ``:K`` argument."""
    return str(config.model_fields["name"].default).partition(":")[0]


def configs() -> dict[str, type[PolicyConfigBase]]:
    """Every registered policy's config class, by name."""
    return {name: entry.config for name, entry in _REGISTRY.items()}


def _tag(value: Any) -> str | None:
    if isinstance(value, dict):
        if "from_file" in value:
            return "from_file"
        name = value.get("name", "none")
    else:
        name = getattr(value, "name", None)
    return str(name).partition(":")[0] if name is not None else None


_BUILT: dict[str, Any] = {}
_LOCK = threading.Lock()


def _adapters() -> tuple[TypeAdapter, TypeAdapter, dict[str, type[PolicyConfigBase]]]:
    """(policy union, policy-or-from_file union, configs), rebuilt when the registry changes."""
    known = configs()
    with _LOCK:
        if _BUILT.get("names") != tuple(known.items()):
            _build(known)
    return _BUILT["policy"], _BUILT["section"], known


def _build(known: dict[str, type[PolicyConfigBase]]) -> None:
    members = tuple(Annotated[cls, Tag(name)] for name, cls in known.items())
    union = Annotated[Union[members], Discriminator(_tag)]  # noqa: UP007
    section = Annotated[Union[(Annotated[FromFileConfig, Tag("from_file")], *members)],  # noqa: UP007
                        Discriminator(_tag)]
    _BUILT.update(names=tuple(known.items()), policy=TypeAdapter(union),
                  section=TypeAdapter(section))


def parse_policy(data: Any, source: str = "policy", prefix: str = "",
                 allow_file: bool = False) -> PolicyConfigBase | FromFileConfig:
    """Validate a policy mapping into its config class; one :class:`InputError` if it is bad.

    ``prefix`` goes before field names in the error (``policy.`` in a study file);
    ``allow_file``: accept ``{from_file: PATH}`` too.
    """
    if isinstance(data, PolicyConfigBase | FromFileConfig):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(source, prefix.rstrip(".") or None, "must be a mapping with a name",
                         "e.g. {name: entropy, tolerance_pct: 99}")
    if "from_file" in data and not allow_file:
        raise InputError(source, prefix + "from_file", "a saved policy is not allowed here",
                         "give a policy by name")
    policy, section, known = _adapters()
    data = _with_levels(data, source, prefix, known)
    try:
        return (section if allow_file else policy).validate_python(data)
    except ValidationError as err:
        raise _explain(err, data, source, prefix, known) from None


def _with_levels(data: dict, source: str, prefix: str,
                 known: dict[str, type[PolicyConfigBase]]) -> dict:
    """``data`` with a nested ``levels`` list parsed (each level's errors named in full)."""
    config = known.get(str(_tag(data)))
    levels = data.get("levels")
    if config is None or "levels" not in config.model_fields or not isinstance(levels, list):
        return data
    return {**data, "levels": [parse_policy(v, source, f"{prefix}levels.{i}.")
                               for i, v in enumerate(levels)]}


def policy_config(**fields: Any) -> PolicyConfigBase:
    """``parse_policy`` for keyword arguments: ``policy_config(name="entropy", tolerance_pct=99)``."""
    return parse_policy(fields)


def _explain(err: ValidationError, data: dict, source: str, prefix: str,
             known: dict[str, type[PolicyConfigBase]]) -> InputError:
    """The first problem (misplaced fields sorted by name) as one InputError."""
    errors = err.errors()
    extra = sorted((e for e in errors if e["type"] == "extra_forbidden"),
                   key=lambda e: str(e["loc"][-1]))
    first = extra[0] if extra else errors[0]
    loc = list(first["loc"])
    # Drop the union tags pydantic puts in the location (at the top and after a level index).
    parts, owner = [], str(data.get("name", "none"))
    for i, part in enumerate(loc):
        if isinstance(part, str) and (i == 0 or isinstance(loc[i - 1], int)) and (
                part in known or part == "from_file"):
            owner = part
            continue
        parts.append(str(part))
    field = prefix + ".".join(parts) if parts else prefix.rstrip(".") or "name"
    kind, msg = first["type"], first["msg"].removeprefix("Value error, ")
    if kind == "union_tag_invalid":
        bad = first.get("input", {})
        name = bad.get("name") if isinstance(bad, dict) else bad
        where = prefix + ".".join([*parts, "name"])
        if isinstance(bad, dict) and "from_file" in bad:
            return InputError(source, where, "a saved policy (from_file) cannot be used here",
                              "give the policy by name and its fields")
        return InputError(source, where, f"unknown policy {name!r}",
                          f"use one of {sorted(known)} (static as static:K)")
    if kind == "union_tag_not_found":
        return InputError(source, field, "needs a name", f"use one of {sorted(known)}")
    last = parts[-1] if parts else "name"
    if kind == "extra_forbidden":
        what = "fitting options" if owner in ("none", "static", "oracle") and last in _FIT else last
        if owner == "from_file":
            return InputError(source, field, f"from_file takes no {last} (a saved policy is "
                              "already fitted)", "remove it, or drop from_file")
        if last in _FIT or owner not in known:
            return InputError(source, field, f"{owner} takes no {what}", "remove it")
        own = sorted(f for f in known[owner].model_fields if f != "name")
        return InputError(source, field, f"{owner} takes no {last} (an extra field; its fields: "
                          f"{', '.join(own) or 'none'})", "remove it or fix its spelling")
    if kind == "missing":
        return InputError(source, field, f"{owner} needs {last}",
                          f"set {prefix or 'policy.'}{'.'.join(parts)}")
    if kind == "literal_error" and last == "name":
        return InputError(source, field, f"{owner} takes no ':' argument", f"write {owner}")
    more = f" ({len(errors) - 1} more)" if len(errors) > 1 else ""
    return InputError(source, field, f"{owner}: {msg}{more}", "see docs/policies.md for each "
                      "policy's fields")


_FIT = {"thresholds", "fractions", "tolerance_pct", "budget_ms", "cost_batch", "patience",
        "n_fits", "epochs", "seed", "tail_tolerance_pct", "accuracy_target", "lookup_ms",
        "selector_threshold", "levels", "latency_target_ms", "window", "warmup", "up_after",
        "switch_cost_ms", "lock", "hold_s"}
