"""The one rich progress-bar layout offramp uses for long work (rich imported lazily)."""

from __future__ import annotations

from typing import Any


def rich_progress(**kwargs: Any) -> Any:
    """A ``rich.progress.Progress``: description, bar, n/total, elapsed, remaining."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), transient=False, **kwargs)
