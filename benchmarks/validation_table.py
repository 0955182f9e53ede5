"""Print a validation folder's headline table as Markdown (for the README).

    .venv/bin/python benchmarks/validation_table.py runs/validate-cpu/validation.json
"""

from __future__ import annotations

import json
import sys

STATS = {"latency_p50_ms": "p50 ms", "latency_mean_ms": "mean ms", "latency_p99_ms": "p99 ms",
         "utilisation": "busy"}


def main(path: str) -> None:
    doc = json.load(open(path))
    rows = {}
    for r in doc["table"]:
        load = r["load"].get("utilisation", r["load"].get("rate_rps"))
        rows.setdefault((load, r["mode"]), {})[r["stat"]] = r
    print("| load | mode | " + " | ".join(f"{v}: real (spread) / sim / error"
                                              for v in STATS.values()) + " | exit match |")
    print("|---|---|" + "---|" * (len(STATS) + 1))
    for (load, mode), stats in sorted(rows.items(), key=lambda x: (x[0][0], x[0][1])):
        cells = []
        for key in STATS:
            r = stats[key]
            verdict = r.get("verdict", "within" if r["within"] else "outside")
            mark = {"within": "", "outside": " ✗", "too noisy": " (too noisy)"}[verdict]
            cells.append(f"{r['median']:.3g} (±{r['spread']:.0%}) / {r['sim']:.3g} / "
                         f"{r['error']:+.0%}{mark}")
        m = stats["exit_match"]
        cells.append(f"{m['min']:.4f}")
        held = "" if stats["latency_p50_ms"].get("held_out", True) else " (calibration)"
        label = f"{load:.0%} busy" if load < 1 else f"{load:g} req/s"
        print(f"| {label} | {mode}{held} | " + " | ".join(cells) + " |")
    runs = doc["runs"]
    loads = [x["loadavg"][0] for x in runs if x.get("loadavg")]
    print(f"\n{len(runs)} real runs; load average (1 min) during them "
          f"{min(loads):.2f}–{max(loads):.2f}; machine {doc['machine']}")


if __name__ == "__main__":
    main(sys.argv[1])
