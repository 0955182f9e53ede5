"""Latency profiles shipped inside the package (``profiling/data/NAME.json``)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"


def list_shipped() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in DATA.glob("*.json"))


def shipped_profile_path(name: str) -> Path | None:
    """Path of a shipped profile by name, or None."""
    path = DATA / f"{name}.json"
    return path if path.exists() else None
