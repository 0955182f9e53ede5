"""A progress bar for long work: rich when installed and wanted, else nothing."""

from __future__ import annotations


class progress_bar:
    """``with progress_bar(label) as bar``: ``bar.start(total)`` once the size of the work is
    known, then ``bar.advance(kind, k, b)`` per step (a profiler's progress callback)."""

    def __init__(self, label: str, quiet: bool = False, total: int | None = None):
        self.label, self.quiet, self.bar, self.task = label, quiet, None, None
        self._total = total

    def __enter__(self) -> progress_bar:
        if self._total is not None:
            self.start(self._total)
        return self

    def start(self, total: int) -> None:
        if self.quiet or self.bar is not None:
            return
        try:
            from offramp.traces.progress import rich_progress

            self.bar = rich_progress()
        except ImportError:
            return
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=total)

    def advance(self, kind: str, k: int, b: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=f"{self.label}  b={b:<3} {kind} {k}")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
