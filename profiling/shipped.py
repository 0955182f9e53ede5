"""Latency profiles shipped inside the package (``profiling/data/NAME.json``)."""

from __future__ import annotations

from pathlib import Path

from offramp.common.errors import InputError

from .format import LatencyProfile, load_profile

DATA = Path(__file__).parent / "data"


def list_shipped() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in DATA.glob("*.json"))


def shipped_profile_path(name: str) -> Path | None:
    """Path of a shipped profile by name, or None."""
    path = DATA / f"{name}.json"
    return path if path.exists() else None


def resolve_profile(name: str) -> LatencyProfile:
    """Load a profile by path, or by the name of a shipped profile."""
    path = Path(name)
    if path.exists() or path.suffix == ".json" or "/" in name:
        return load_profile(path)
    shipped = shipped_profile_path(name)
    if shipped is None:
        raise InputError(name, None, "no such profile file or shipped profile",
                         f"pass a path, or one of: {', '.join(list_shipped()) or '(none shipped)'}")
    return load_profile(shipped)
