"""The one error type offramp raises for bad user input.

Every message names the file (or config section), the field and the fix, so the CLI can print
one line instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: a malformed file, an invalid config or a missing dataset."""

    def __init__(self, source: str | Path | None, field: str | None, problem: str, fix: str = ""):
        self.source = str(source) if source is not None else None
        self.field = field
        self.problem = problem
        self.fix = fix
        where = self.source or "input"
        if field:
            where += f": field '{field}'"
        msg = f"{where}: {problem}"
        if fix:
            msg += f" (fix: {fix})"
        super().__init__(msg)

    def __reduce__(self) -> tuple:
        # Crosses process boundaries whole (a worker's error reaches the command intact).
        return (type(self), (self.source, self.field, self.problem, self.fix))
