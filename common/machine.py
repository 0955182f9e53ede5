"""What machine this is, for provenance metadata (standard library only, so GPU-side code can use it)."""

from __future__ import annotations

import platform
import shlex
import sys
from pathlib import Path


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_COMMAND: list[str] | None = None


def set_command(argv: list[str]) -> None:
    """Record the command line being run (the CLI calls this, so provenance names the
    offramp command even when it runs inside another Python program)."""
    global _COMMAND
    _COMMAND = list(argv)


def command_line() -> str:
    """The command line this process runs, as a user would type it."""
    if _COMMAND is not None:
        return shlex.join(_COMMAND)
    argv = sys.argv[:]
    argv[0] = "offramp" if Path(argv[0]).name in ("offramp", "__main__.py", "cli.py") else argv[0]
    return " ".join(argv)
