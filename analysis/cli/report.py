"""``offramp report FOLDER``: one self-contained HTML page (tables, plots, the study and the
command that reproduces it) for what simulate, sweep, capacity, optimize, frontier, concurrency
or demo wrote with -o.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from offramp.analysis.cli.options import user_help
from offramp.common.atomic import atomic_path
from offramp.common.outputs import check_output_file


def run(args: argparse.Namespace) -> int:
    from offramp.analysis.report.html import report

    out = Path(args.output) if args.output else Path(args.folder) / "report.html"
    check_output_file(out, "report file", ".html")
    page = report(args.folder)
    with atomic_path(out, suffix=".html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    print(f"wrote {out} ({len(page) // 1024} KiB, self-contained)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page for a run, sweep, capacity, "
                       "optimize, frontier or concurrency folder",
                       description=user_help(__doc__))
    p.add_argument("folder", help="what offramp simulate, sweep, capacity, optimize, frontier, "
                   "concurrency or demo wrote with -o")
    p.add_argument("-o", "--output", help="HTML file (default: FOLDER/report.html)")
    p.set_defaults(func=run)
