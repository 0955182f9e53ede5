"""Changing fields of a study: one rule for ``--set`` (simulate, capacity, fit, sweep), a sweep's
grid points and a comparison's variants.

Fields are dotted (``section.field``). Two sections hold variants whose fields differ:
- ``policy``: setting ``policy.name`` or ``policy.from_file`` replaces the policy whole (only the
  fields given with it), since each policy has its own fields;
- ``workload``: setting ``workload.kind`` to another kind drops the fields the new kind does not
  read (those given with it stay, so a mistake there is still an error).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from offramp.analysis.study.config import StudyConfig, load_config, parse_config, parse_value
from offramp.common.errors import InputError
from offramp.sim.config import WorkloadConfig

REPLACES_POLICY = ("name", "from_file")


def parse_sets(items: list[str], option: str = "--set") -> dict[str, Any]:
    """``section.field=value`` items (values read as YAML) as {"section.field": value}."""
    fields: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise InputError(option, item, "must look like section.field=value",
                             f'e.g. {option} "server.exit_mode=none"' if option == "--compare"
                             else f"e.g. {option} workload.rate_rps=2000")
        fields[key] = parse_value(raw, option, item)
    return fields


def apply_fields(data: dict[str, Any], fields: dict[str, Any], source: str) -> dict[str, Any]:
    """A copy of the study mapping ``data`` with ``fields`` ({"section.field": value}) set."""
    data = copy.deepcopy(data)
    given: dict[str, set[str]] = {}
    for key in fields:
        section, _, name = key.partition(".")
        given.setdefault(section, set()).add(name)
    if given.get("policy", set()) & set(REPLACES_POLICY):
        data["policy"] = {}  # another policy: only the fields given with it
    old_kind = (data.get("workload") or {}).get("kind", "poisson")
    for key, value in fields.items():
        section, _, name = key.partition(".")
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise InputError(source, key, f"section {section!r} is not a mapping", "fix it")
        data[section][name] = value
    wl = data.get("workload")
    if isinstance(wl, dict) and wl.get("kind", "poisson") != old_kind:
        takes = set(WorkloadConfig.FIELDS.get(wl.get("kind"), ())) | {"kind"}
        for name in list(wl):
            if name not in takes and name not in given.get("workload", set()):
                del wl[name]
    return data


def apply_sets(data: dict[str, Any], items: list[str], option: str = "--set") -> dict[str, Any]:
    """``data`` with the command line's ``--set section.field=value`` items applied."""
    return apply_fields(data, parse_sets(items, option), option)


def study_with_sets(path: str | Path, sets: Sequence[str] = ()) -> tuple[StudyConfig, str]:
    """The study at ``path`` with the command line's ``--set`` items applied, and the name its
    errors go by (``PATH with --set`` when any is given)."""
    cfg = load_config(path)
    if not sets:
        return cfg, str(path)
    named = set_name(path, sets)
    return parse_config(apply_sets(cfg.model_dump(mode="json", exclude_unset=True),
                                   list(sets)), named), named


def set_name(path: str | Path, sets: Sequence[str] = ()) -> str:
    """The name a study's errors go by: ``PATH with --set`` when ``--set`` changed it."""
    return f"{path} with --set" if sets else str(path)
