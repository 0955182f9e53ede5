"""Dynamic-OFA under contention: does switching hold the latency target where a fixed level does not?

Runs ``examples/dynamic-ofa-contention.yaml`` (fmnist on its shipped CPU profile, 600 req/s,
every stage ×1.5 from t = 10 s, target: an 8 ms window mean) with the manager counting requests,
batches and seconds, and with each of its levels served alone. Prints, per variant, the mean
latency and p99 before (5–10 s) and under contention (15–30 s), the share of 100 ms bins whose
mean latency exceeds the target under contention, test accuracy before, under and overall, and
SLO attainment (25 ms).

    .venv/bin/python benchmarks/dofa_contention.py [--replications 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

import offramp

STUDY = Path(__file__).resolve().parent.parent / "examples" / "dynamic-ofa-contention.yaml"
CONTENTION_S = 10.0
LEVELS = (95, 98, 100)


def variants() -> dict[str, dict]:
    out = {"manager, 20 requests (default)": {},
           "manager, window 2 batches": {"policy.unit": "batches", "policy.window": 2,
                                         "policy.warmup": 1, "policy.up_after": 6},
           "manager, window 20 ms": {"policy.unit": "seconds", "policy.window": 0.02,
                                     "policy.warmup": 0.01, "policy.up_after": 0.06}}
    for tau in LEVELS:
        out[f"entropy τ={tau} alone"] = {"policy": {"name": "entropy", "tolerance_pct": tau}}
    out["no exits"] = {"policy": {"name": "none"}}
    return out


def measure(fields: dict, replications: int, rate: float | None = None,
            target_ms: float | None = None) -> dict:
    doc = yaml.safe_load(STUDY.read_text())
    target = doc["policy"]["latency_target_ms"] if target_ms is None else target_ms
    if rate is not None:
        doc["workload"]["rate_rps"] = rate
    doc["policy"]["latency_target_ms"] = target
    if "policy" in fields:  # a whole section replaced, not merged
        doc["policy"] = fields.pop("policy")
    study = offramp.load_study(doc, {"run.replications": replications, **fields})
    run = offramp.simulate(study)
    req = run.requests()
    req = req[~req["warmup"]]
    before = req[(req["arrival_s"] >= 5) & (req["arrival_s"] < CONTENTION_S)]
    under = req[req["arrival_s"] >= CONTENTION_S + 5]
    bins = under.groupby([under["replication"], (under["finish_s"] * 10).astype(int)])
    over = float((bins["latency_ms"].mean() > target).mean())
    return {"mean ms before": before["latency_ms"].mean(), "p99 ms before":
            np.percentile(before["latency_ms"], 99), "mean ms under": under["latency_ms"].mean(),
            "p99 ms under": np.percentile(under["latency_ms"], 99),
            "bins over target": over, "accuracy before": before["correct"].mean(),
            "accuracy under": under["correct"].mean(), "accuracy": run.summary["accuracy"],
            "SLO met": run.summary["slo_attainment"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replications", type=int, default=2)
    ap.add_argument("--rate", type=float, default=None, help="req/s (default: the study's)")
    ap.add_argument("--target-ms", type=float, default=None, help="the manager's target")
    args = ap.parse_args()
    rows = {name: measure(dict(fields), args.replications, args.rate, args.target_ms)
            for name, fields in variants().items()}
    table = pd.DataFrame(rows).T
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.3f}".format):
        print(table)


if __name__ == "__main__":
    main()
