"""Run every shipped example study in full (and one short study per other policy) and print a
SHA-256 of each run's requests.parquet columns (and of a stateful policy's history).

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


# Besides the shipped examples: one short study per policy not in them (same shipped data).
POLICY_STUDIES = {
    "none-keep": {"name": "none"},
    "static": {"name": "static:1"},
    "maxprob-budget": {"name": "maxprob", "budget_ms": 0.8},
    "entropy-fractions": {"name": "entropy", "fractions": [0.5, 0.2, 0.2, 0.1]},
    "oracle": {"name": "oracle"},
    "oracle-budget": {"name": "oracle", "budget_ms": 0.8},
    "patience": {"name": "patience", "patience": 2},
    "eenet": {"name": "eenet", "budget_ms": 0.8, "n_fits": 1, "epochs": 20},
    "gati": {"name": "gati", "accuracy_target": 0.9},
    "pame": {"name": "pame", "tolerance_pct": 98},
}


def _policy_study(policy: dict) -> str:
    import yaml

    mode = "keep" if policy["name"] == "none" else "shrink"
    return yaml.safe_dump({"workload": {"rate_rps": 1200}, "server": {"exit_mode": mode},
                           "policy": policy, "slo": {"latency_ms": 20},
                           "run": {"requests": 4000, "replications": 2}})


def frame_digest(path: Path, without: frozenset[str] = frozenset()) -> str:
    """SHA-256 of a requests.parquet's columns (name and raw values, in file order), leaving
    out ``without`` (columns a change adds, so the rest can be compared with an older run)."""
    import pandas as pd

    frame = pd.read_parquet(path)
    h = hashlib.sha256()
    for col in frame.columns:
        if col not in without:
            h.update(col.encode())
            h.update(frame[col].to_numpy().tobytes())
    return h.hexdigest()


def digests(without: frozenset[str] = frozenset()) -> dict[str, str]:
    from offramp.analysis.cli import main as cli

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        studies = sorted((REPO / "examples").glob("*.yaml"))
        for name, policy in POLICY_STUDIES.items():
            studies.append(Path(tmp) / f"policy-{name}.yaml")
            studies[-1].write_text(_policy_study(policy))
        for path in studies:
            dest = Path(tmp) / "runs" / path.stem
            if cli(["simulate", str(path), "-o", str(dest), "--json"]) != 0:
                sys.exit(f"examples_digest: {path.name} failed")
            out[path.name] = frame_digest(dest / "requests.parquet", without)
            summary = json.loads((dest / "summary.json").read_text())
            if summary.get("policy_history"):
                out[path.name + ":policy_history"] = hashlib.sha256(
                    json.dumps(summary["policy_history"]).encode()).hexdigest()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path)
    ap.add_argument("--compare", type=Path, help="an earlier output of this script")
    ap.add_argument("--without", default="", help="comma-separated columns to leave out (ones "
                    "a change adds), e.g. overhead_ms,segment_ms")
    args = ap.parse_args(argv)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        got = digests(frozenset(c for c in args.without.split(",") if c))
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
