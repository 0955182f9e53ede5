"""Run every shipped example study in full and print a SHA-256 of each run's requests.parquet.

    .venv/bin/python benchmarks/examples_digest.py [-o benchmarks/results/examples-LABEL.json]

A restructuring that must change no result is checked by running this before and after it and
comparing the two files (``--compare OLD.json``): every example's per-request results must be
bit-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def digests() -> dict[str, str]:
    from offramp.analysis.cli import main as cli

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted((REPO / "examples").glob("*.yaml")):
            dest = Path(tmp) / path.stem
            if cli(["simulate", str(path), "-o", str(dest), "--json"]) != 0:
                sys.exit(f"examples_digest: {path.name} failed")
            out[path.name] = hashlib.sha256((dest / "requests.parquet").read_bytes()).hexdigest()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path)
    ap.add_argument("--compare", type=Path, help="an earlier output of this script")
    args = ap.parse_args(argv)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        got = digests()
    for name, digest in got.items():
        print(f"{digest}  {name}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(got, indent=1) + "\n")
    if args.compare:
        old = json.loads(args.compare.read_text())
        differ = sorted(n for n in old.keys() | got.keys() if old.get(n) != got.get(n))
        if differ:
            print(f"DIFFERENT from {args.compare}: {', '.join(differ)}")
            return 1
        print(f"all {len(got)} examples bit-identical to {args.compare}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
