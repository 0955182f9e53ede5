"""Decision fidelity: do the real runs and the simulation rank configurations the same way?

    .venv/bin/python benchmarks/decision_fidelity.py runs/dec-*/validation.json [--stat latency_p99_ms]

Each validation folder is one batching configuration (its plan's max_batch and max_wait_ms)
served in each of its exit modes at the same arrival rate(s); every (configuration, mode, load)
is one point. Prints the points (real median, simulated, held out or not), then per load
Kendall's tau between the real and the predicted ranking, and whether the real best is the
predicted best. The figure a user decides from, which no serving simulator publishes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy.stats import kendalltau


def points(paths: list[Path], stat: str) -> list[dict]:
    out = []
    for path in paths:
        doc = json.loads(path.read_text())
        plan = doc["plan"]
        for r in doc["table"]:
            if r["stat"] != stat:
                continue
            load = r["load"].get("rate_rps", r["load"].get("utilisation"))
            out.append({"config": f"mb{plan['max_batch']} wait{plan['max_wait_ms']:g} {r['mode']}",
                        "load": load, "real": r["median"], "spread": r["spread"],
                        "sim": r["sim"], "verdict": r.get("verdict", ""),
                        "held_out": r.get("held_out", True), "folder": path.parent.name})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("validations", nargs="+", type=Path)
    ap.add_argument("--stat", default="latency_p99_ms")
    args = ap.parse_args(argv)
    pts = points(args.validations, args.stat)
    print(f"| load | configuration | real {args.stat} (spread) | simulated | error | verdict |")
    print("|---|---|---|---|---|---|")
    for p in sorted(pts, key=lambda p: (p["load"], p["real"])):
        print(f"| {p['load']:g} | {p['config']} | {p['real']:.3g} (±{p['spread']:.0%}) | "
              f"{p['sim']:.3g} | {p['sim'] / p['real'] - 1:+.0%} | {p['verdict']}"
              f"{'' if p['held_out'] else ' (calibration)'} |")
    for load in sorted({p["load"] for p in pts}):
        group = [p for p in pts if p["load"] == load]
        if len(group) < 3:
            continue
        tau, pval = kendalltau([p["real"] for p in group], [p["sim"] for p in group])
        best_real = min(group, key=lambda p: p["real"])["config"]
        best_sim = min(group, key=lambda p: p["sim"])["config"]
        print(f"\nload {load:g}: {len(group)} configurations, Kendall tau {tau:.2f} "
              f"(p = {pval:.3f}); real best {best_real!r}, predicted best {best_sim!r}: "
              f"{'the same' if best_real == best_sim else 'DIFFERENT'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
