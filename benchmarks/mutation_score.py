"""Scoring and reporting of a mutation run (benchmarks/mutation.py): which mutants are known
equivalent (benchmarks/mutation_equivalent.toml), the score per group, the report."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Group -> modules mutated. "summaries" are the run metrics; the validators are the input checks.
CORE = {
    "sim": ["sim/fast.py", "sim/reference.py", "sim/service.py", "sim/workload.py", "sim/replay.py",
            "sim/runner.py", "sim/records.py", "sim/scenario.py"],
    # The rules every layer shares (added 2026-12-06; scored on their own).
    "core": ["core/execution.py", "core/batching.py", "core/modes.py", "core/plan.py"],
    "summaries": ["sim/metrics.py"],
    "policies": ["policies/base.py", "policies/baselines.py", "policies/confidence.py",
                 "policies/thresholds.py", "policies/costs.py", "policies/pame.py",
                 "policies/patience.py", "policies/table.py", "policies/oracle_lp.py",
                 "policies/mixing.py", "policies/eenet.py", "policies/gati.py",
                 "policies/dynamic_ofa.py", "policies/registry.py"],
    "latency": ["profiling/latency.py"],
    "validators": ["traces/format.py", "profiling/format.py", "sim/config.py",
                   "analysis/study/config.py"],
    # Added 2026-12-06 (not yet run: docs/testing.md): the judge and the validation pipeline's
    # pure parts, the capacity search, sweeps and overrides, the served-cost fit.
    "validation": ["analysis/validation/judge.py", "analysis/validation/served.py",
                   "analysis/validation/sim.py", "profiling/served.py"],
    "studies": ["analysis/studies/capacity.py", "analysis/studies/sweep.py", "analysis/study/overrides.py"],
}
# cosmic-ray operators left out (regexes); see the module docstring for what is kept.
KEEP_COMPARE = ["Lt_LtE", "Lt_GtE", "LtE_Lt", "LtE_Gt", "Gt_GtE", "Gt_LtE", "GtE_Gt", "GtE_Lt",
                "Eq_NotEq", "NotEq_Eq", "Is_IsNot", "IsNot_Is", "In_NotIn", "NotIn_In"]
KEEP_BINARY = ["Add_Sub", "Sub_Add", "Mul_Div", "Div_Mul", "FloorDiv_Div", "Pow_Mul",
               "BitAnd_BitOr", "BitOr_BitAnd"]
EXCLUDE_OPERATORS = [
    "core/ReplaceComparisonOperator_(?!(" + "|".join(KEEP_COMPARE) + ")$)",
    "core/ReplaceBinaryOperator_(?!(" + "|".join(KEEP_BINARY) + ")$)",
    "core/ReplaceUnaryOperator_(?!(USub_UAdd|Delete_USub|Delete_Not|Delete_Invert)$)",
    "core/VariableInserter", "core/VariableReplacer", "core/RemoveDecorator",
    "core/ExceptionReplacer",
]


def merge_recheck(old: dict, new: dict) -> dict:
    """The earlier results with the rechecked survivors' new outcomes (same sources)."""
    key = lambda m: (m["module"], m["operator"], m["occurrence"])  # noqa: E731
    again = {key(m): m for m in new["mutants"]}
    mutants = [again.get(key(m), m) for m in old["mutants"]]
    res = score(mutants, new["label"], f"{old['rev']} rechecked at {new['rev']}",
                old["seconds"] + new["seconds"], load_equivalent())
    res.update(sample=old.get("sample", 1.0), recheck_seconds=new["seconds"],
               rechecked=len(again))
    return res


def load_equivalent() -> dict[str, str]:
    path = REPO / "benchmarks" / "mutation_equivalent.toml"
    if not path.exists():
        return {}
    return {e["id"]: e["why"] for e in tomllib.loads(path.read_text()).get("mutant", [])}


ANNOTATION = re.compile(r"^\s*(def \w+\(|\w+\s*:\s*[^=]*\|)|->\s*[^:]*\|")


def equivalent_reason(m: dict, listed: dict[str, str]) -> str | None:
    """Why a surviving mutant is equivalent: listed by hand, or by rule; None if it is not."""
    if m["outcome"] != "survived":
        return None
    if m["id"] in listed:
        return listed[m["id"]]
    if m["operator"] == "ReplaceBinaryOperator_BitOr_BitAnd" and ANNOTATION.search(m["source"]):
        return ("type annotation (`X | None`): never evaluated, every module has "
                "`from __future__ import annotations`")
    return None


def mutant_id(module: str, line: int, operator: str, text: str) -> str:
    """A key that survives unrelated edits elsewhere: module, operator and the line's text."""
    return f"{module}|{operator.removeprefix('core/')}|{text.strip()}"


def report(copy: Path, db: Path, label: str, rev: str, seconds: float) -> dict:
    dump = subprocess.run(["cosmic-ray", "dump", str(db)], cwd=copy, check=True,
                          capture_output=True, text=True).stdout
    group_of = {m: g for g, mods in CORE.items() for m in mods}
    equivalent = load_equivalent()
    mutants = []
    for row in dump.splitlines():
        item, result = json.loads(row)
        if result is None or result.get("worker_outcome") == "skipped":
            continue
        mut = item["mutations"][0]
        module, line = mut["module_path"], mut["start_pos"][0]
        text = (copy / module).read_text().splitlines()[line - 1]
        outcome = result.get("test_outcome") or result.get("worker_outcome")
        output = result.get("output") or ""
        key = mutant_id(module, line, mut["operator_name"], text)
        mutants.append({"group": group_of[module], "module": module, "line": line,
                        "operator": mut["operator_name"].removeprefix("core/"),
                        "occurrence": mut["occurrence"], "source": text.strip(),
                        "outcome": outcome,
                        "not_covered": outcome == "survived" and output.startswith("not covered"),
                        "timeout": output.startswith("timeout"),
                        "id": key})
    return score(mutants, label, rev, seconds, equivalent)


def score(mutants: list[dict], label: str, rev: str, seconds: float,
          equivalent: dict[str, str]) -> dict:
    """Per-group score; survivors known to be equivalent are left out."""
    for m in mutants:
        m["equivalent"] = equivalent_reason(m, equivalent)
    groups = {}
    for g in CORE:
        ms = [m for m in mutants if m["group"] == g and m["outcome"] in ("killed", "survived")]
        eq = sum(1 for m in ms if m["equivalent"])
        killed = sum(1 for m in ms if m["outcome"] == "killed")
        denom = len(ms) - eq
        groups[g] = {"mutants": len(ms), "killed": killed, "equivalent": eq,
                     "survived": denom - killed,
                     "not_covered": sum(1 for m in ms if m["not_covered"]),
                     "score": round(killed / denom, 4) if denom else None}
    return {"label": label, "rev": rev, "seconds": round(seconds), "operators_excluded":
            EXCLUDE_OPERATORS, "groups": groups, "mutants": mutants}


def print_report(res: dict) -> None:
    print(f"\nmutation score ({res['label']}, rev {res['rev']}, {res['seconds']} s)")
    print(f"{'group':<11} {'mutants':>7} {'killed':>7} {'equiv.':>7} {'survived':>8} "
          f"{'uncov.':>7} {'score':>7}")
    for g, s in res["groups"].items():
        score = "-" if s["score"] is None else f"{100 * s['score']:.1f}%"
        print(f"{g:<11} {s['mutants']:>7} {s['killed']:>7} {s['equivalent']:>7} "
              f"{s['survived']:>8} {s['not_covered']:>7} {score:>7}")
    surv = [m for m in res["mutants"] if m["outcome"] == "survived" and not m["equivalent"]]
    if surv:
        print(f"\n{len(surv)} surviving mutants (not known equivalent):")
        for m in sorted(surv, key=lambda m: (m["module"], m["line"])):
            tag = " [not covered]" if m["not_covered"] else ""
            print(f"  {m['module']}:{m['line']} {m['operator']}{tag}: {m['source']}")
