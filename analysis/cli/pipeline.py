"""``offramp pipeline STUDY.yaml --gpus 2,4``: E3's split of the study's segments over GPUs
(GPUs in proportion to each group's work), with the ``--set`` that serves it
(``exit_mode: rebatch``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from offramp.analysis.cli.options import user_help
from offramp.common.errors import InputError


def _gpus(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 2:
        raise InputError("--gpus", None, f"{text!r} is not a list of GPU counts >= 2",
                         "e.g. --gpus 2,4")
    return counts


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from offramp.analysis.studies.pipeline_split import pipeline_splits, segment_loads
    from offramp.analysis.study.config import load_config

    cfg = load_config(args.config)
    base = Path(args.config).parent
    rows = pipeline_splits(cfg, base, _gpus(args.gpus))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    reach, per_sample = segment_loads(cfg, base)
    print("segment reach (val): " + "  ".join(f"{r:.3f}" for r in reach))
    print("ms per sample at max_batch: " + "  ".join(f"{c:.4f}" for c in per_sample))
    table = Table(title=f"{args.config}: pipeline splits (GPUs in proportion to work)")
    for col in ("GPUs", "segments per group", "GPUs per group", "ms per request per group",
                "bound req/s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["gpus"]), " | ".join(",".join(map(str, g)) for g in r["groups"]),
                      " | ".join(map(str, r["replicas"])),
                      " | ".join(f"{w:.3f}" for w in r["work_ms"]), f"{r['bound_rps']:.0f}")
    Console(width=None if Console().is_terminal else 160).print(table)
    for r in rows:
        print(f"--set server.exit_mode=rebatch --set '{r['set']}'   # {r['gpus']} GPUs")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="split a study's segments over GPUs (E3, rebatch)",
                       description=user_help(__doc__))
    p.add_argument("config", help="study YAML (its policy, profile and max_batch)")
    p.add_argument("--gpus", default="2,4", help="GPU counts, comma-separated (default 2,4)")
    p.add_argument("--json", action="store_true", help="print the splits as JSON")
    p.set_defaults(func=run)
