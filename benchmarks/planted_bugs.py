"""Plant realistic bugs one at a time and see whether the test suite catches each (not CI).

    .venv/bin/python benchmarks/planted_bugs.py [--rev HEAD] [--workers 2] [--label after]
        [--guards-only]

Each bug below is a small edit a reviewer could plausibly miss (a percentile, a quantile, a tie,
an off-by-one, a boundary). For each, in a throw-away copy of ``--rev`` (see mutation.py), the
edit is applied and the tests that execute the edited lines are run (the same selection as the
mutation runner); a bug is *caught* when some test fails. The tests named in ``guards`` are the
ones that are meant to catch it; the result says which test failed first. ``--guards-only``
runs just those (no coverage run of the suite first): each bug is then caught only if the test
written for it fails.

Writes ``benchmarks/results/planted-LABEL.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mutation  # noqa: E402

# (id, file, old text, new text, the test meant to catch it)
BUGS = [
    ("p99-as-p95", "sim/metrics.py", '"p99": 99,', '"p99": 95,', "test_metrics"),
    ("ci-90-quantile", "sim/metrics.py", "stats.t.ppf(0.975", "stats.t.ppf(0.95",
     "test_engines::test_confidence_interval_covers"),
    ("ci-normal-quantile", "sim/metrics.py", "stats.t.ppf(0.975, n - 1)", "stats.norm.ppf(0.975)",
     "test_engines::test_confidence_interval_covers"),
    ("ci-population-sd", "sim/metrics.py", "vals.std(ddof=1)", "vals.std()", "test_metrics"),
    ("window-from-first-arrival", "sim/metrics.py", "t0, t1 = rec.arrival[keep].min()",
     "t0, t1 = rec.arrival.min()", "test_metrics"),
    ("accuracy-at-last-exit", "sim/metrics.py", 'out["accuracy"] = float(trace.correct[samples, exits]',
     'out["accuracy"] = float(trace.correct[samples, k_exits - 1]', "test_metrics"),
    ("warmup-one-extra", "sim/metrics.py", "cut = int(math.floor(n * warmup_fraction))",
     "cut = int(math.floor(n * warmup_fraction)) + 1", "test_metrics"),
    ("utilisation-ignores-replicas", "sim/metrics.py", "(window * replicas)", "window",
     "test_metrics"),
    ("conf-ties-stay", "policies/confidence.py", "conf[:, :-1] >= self.conf_thresholds_",
     "conf[:, :-1] > self.conf_thresholds_", "test_confidence"),
    ("entropy-direction", "policies/confidence.py", "return 1.0 - trace.entropy",
     "return trace.entropy", "test_confidence"),
    ("entropy-thresholds-path", "policies/confidence.py",
     "return 1.0 - np.asarray(t, dtype=float)", "return np.asarray(t, dtype=float)",
     "test_confidence"),
    ("fractions-off-by-one", "policies/thresholds.py", "[::-1][take - 1]", "[::-1][take]",
     "test_confidence"),
    ("fractions-ignore-active", "policies/thresholds.py",
     "        active &= ~(conf[:, k] >= thresholds[k])\n", "", "test_confidence"),
    ("tolerance-unconditional-target", "policies/thresholds.py",
     "        target = (target - pass_acc * (1 - r)) / r\n", "", "test_confidence"),
    ("tolerance-splits-ties", "policies/thresholds.py", "valid[1:m] = s[:-1] != s[1:]",
     "valid[1:m] = True", "test_confidence"),
    ("tolerance-strict-target", "policies/thresholds.py", "mixed >= target - 1e-12",
     "mixed > target", "test_confidence"),
    ("keep-runs-shrunk", "core/execution.py",
     'return size if mode.keeps_size else active', "return active",
     "test_policies_pame::test_pame_keep_mode_times_by_hand"),
    ("gather-when-none-exit", "core/execution.py", "if mode.compacts and going_on < active:",
     "if mode.compacts and going_on <= active:", "test_policies_pame"),
    ("engine-size-exact-skipped", "profiling/latency.py", "if size >= b:", "if size > b:",
     "test_hand_traced::test_bucketed_engine_rounds_batch_up"),
    ("sigma-wrong-z", "profiling/latency.py", "math.log(tail / median) / Z99",
     "math.log(tail / median) / 1.6449", "test_latency_model"),
    ("p99-interpolated-from-p50", "profiling/latency.py", "tail = float(np.interp(size, sizes, p99))",
     "tail = float(np.interp(size, sizes, p50))", "test_latency_model"),
    ("extrapolates-above", "profiling/latency.py", "if not lo <= size <= hi:", "if not lo <= size:",
     "test_latency_model"),
    ("trace-nan-maxprob", "traces/schema.py", "if not np.isfinite(t.maxprob).all() or ", "if ",
     "test_validators"),
    ("trace-split-one-past", "traces/schema.py", "t.split.max() >= len(SPLITS)",
     "t.split.max() > len(SPLITS)", "test_validators"),
    ("trace-entropy-loose", "traces/schema.py", "t.entropy.max() > 1 + 1e-6",
     "t.entropy.max() > 1 + 1e-2", "test_validators"),
    ("warmup-fraction-one", "sim/config.py", "Field(0.1, ge=0, lt=1,", "Field(0.1, ge=0, le=1,",
     "test_validators"),
    ("profile-p99-equal-rejected", "profiling/format.py", 'if r["p99_ms"] < r["p50_ms"]:',
     'if r["p99_ms"] <= r["p50_ms"]:', "test_validators"),
    ("profile-compact-last-exit", "profiling/format.py", '"compact": k_exits - 1,',
     '"compact": k_exits,', "test_validators"),
    ("littles-law-finish-a-stage-early", "sim/fast.py",
     "        t += tb[b] * _exp(ts[b] * z[o + zi]) * x * fac[zi]\n        if leave >= 0:\n"
     "            ends[leave] = t\n",
     "        if leave >= 0:\n            ends[leave] = t\n"
     "        t += tb[b] * _exp(ts[b] * z[o + zi]) * x * fac[zi]\n", "test_queueing::test_littles_law"),
    ("oracle-bound-budget-slack", "policies/oracle_lp.py", "cost <= budget_ms]",
     "cost <= budget_ms * 1.05]", "test_policies_bound"),
    ("registry-drops-cost-batch", "policies/registry.py",
     "return exit_costs(self.latency, cost_batch)", "return exit_costs(self.latency)",
     "test_policies_registry"),
    ("registry-drops-pame-mode", "policies/registry.py",
     'exit_mode=getattr(srv, "exit_mode", ExitMode.SHRINK),', "", "test_policies_registry"),
    ("registry-drops-hold", "policies/registry.py", "lock=cfg.lock, hold_s=cfg.hold_s)",
     "lock=cfg.lock)", "test_policies_registry"),
    ("keep-compacts", "core/execution.py", 'if mode.compacts and going_on < active:',
     "if going_on < active:", "test_hand_traced::test_keep_pays_checks_and_handoffs"),
    ("check-at-last-exit", "core/execution.py", "    if hi < n_exits - 1:\n",
     "    if hi <= n_exits - 1:\n", "test_stages"),
    ("examples-keep-shrinks-in-reference", "sim/reference.py",
     "steps = batch_steps(mode, size, sc.policy.active_exits(k_exits).tolist())",
     "steps = batch_steps(\"shrink\" if mode == \"keep\" else mode, size, "
     "sc.policy.active_exits(k_exits).tolist())", "test_examples"),
    ("replay-ignores-rate-scale", "sim/replay.py", "arr = rec.arrival_s / cfg.rate_scale",
     "arr = rec.arrival_s", "test_replay"),
    ("show-any-as-all", "traces/summary.py", "trace.correct[idx].any(axis=1).mean()",
     "trace.correct[idx].all(axis=1).mean()", "test_cmd_traces::test_show_shipped_by_name"),
    ("show-oracle-depth", "traces/summary.py",
     '"oracle_mean_exit_index": round(float(depth.mean()), 4)',
     '"oracle_mean_exit_index": round(float(depth.mean() - 0.5), 4)',
     "test_cmd_traces::test_show_shipped_by_name"),
    # The classes a reviewer's audit of the code that landed last found uncaught (docs/testing.md)
    ("judge-error-relative-to-sim", "analysis/validation/judge.py",
     "err = (sim - med) / abs(med) if med", "err = (sim - med) / abs(sim) if med", "test_judge"),
    ("judge-ignores-spread", "analysis/validation/judge.py",
     "elif abs(err) <= max(spread, target):", "elif abs(err) <= target:", "test_judge"),
    ("judge-keeps-flagged-repeats", "analysis/validation/judge.py",
     "rest = [v for i, v in enumerate(values) if i not in set(flagged)]", "rest = list(values)",
     "test_judge"),
    ("capacity-new-seed-per-probe", "analysis/studies/capacity.py",
     'run = self.run.model_copy(update={"replications": reps})',
     'run = self.run.model_copy(update={"replications": reps, "seed": self.run.seed + '
     'len(self.probes)})', "test_exact_fits"),
    ("capacity-stops-early", "analysis/studies/capacity.py", "while (hi - lo) > rel_tol * lo:",
     "while (hi - lo) > 10 * rel_tol * lo:", "test_exact_fits"),
    ("capacity-always-certain", "analysis/studies/capacity.py",
     "(self.attainment if attain else self.slo_ms)) > ci",
     "(self.attainment if attain else self.slo_ms)) > -1.0", "test_exact_fits"),
    ("sweep-point-keeps-policy-fields", "analysis/study/overrides.py",
     'data["policy"] = {}  # another policy', 'data.setdefault("policy", {})  # another policy',
     "test_sweep::test_a_point_that_names_another_policy_runs_that_policy_alone"),
    ("sweep-keeps-stale-temp-files", "analysis/studies/sweep.py",
     'for stale in folder.glob(".*.json"):', 'for stale in folder.glob(".*.jsonx"):',
     "test_sweep::test_killed_sweep_resumes_and_keeps_what_it_finished"),
    ("pame-ignores-tail-limit", "policies/pame.py",
     'ok = [c for c in cands.values() if c["worst_ms"] <= tail_limit + 1e-9]',
     "ok = list(cands.values())", "test_policies_pame"),
    ("eenet-keeps-least-accurate-fit", "policies/eenet.py",
     'best = (max(within, key=lambda f: f["accuracy"])',
     'best = (min(within, key=lambda f: f["accuracy"])', "test_policies_eenet"),
    ("diurnal-amplitude-one", "sim/config.py", "amplitude: float = Field(0.5, ge=0, lt=1,",
     "amplitude: float = Field(0.5, ge=0, le=1,", "test_validators"),
    ("atomic-file-private", "common/atomic.py", "os.chmod(tmp_path, 0o666 & ~umask)",
     "os.chmod(tmp_path, 0o600)", "test_edges"),
    ("served-fit-medians-only", "profiling/served.py",
     "c = _backfit_means(y, key_id, c_id, len(keys), n_k * n_i)", "c = np.zeros(n_k * n_i)",
     "test_exact_fits"),
]


def run_bug(copy: Path, bug: tuple, guards_only: bool = False) -> dict:
    name, path, old, new, guard = bug
    target = copy / path
    src = target.read_text()
    found = src.count(old)
    if found != 1:
        return {"bug": name, "file": path, "guard": guard, "caught": None,
                "note": f"edit does not apply ({found} matches)"}
    t0 = time.time()
    try:
        target.write_text(src.replace(old, new))
        env = mutation.copy_env(copy)
        out = subprocess.run([sys.executable, str(copy / ".mutation" / "runner.py")], cwd=copy,
                             env=env, capture_output=True, text=True) if not guards_only else None
        # And the test meant to catch it, on its own.
        module, _, test = guard.partition("::")
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
               f"tests/{module}.py"] + (["-k", test] if test else [])
        own = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True)
    finally:
        target.write_text(src)
    if out is None:  # --guards-only: caught when the test meant to catch it fails
        out = own
    failed = [ln.split(" ", 1)[1].split(" - ")[0] for ln in out.stdout.splitlines()
              if ln.startswith("FAILED ") or ln.startswith("ERROR ")]
    return {"bug": name, "file": path, "guard": guard, "caught": out.returncode != 0,
            "guard_fails": {0: False, 1: True}.get(own.returncode),  # None: no such test here
            "first_failure": failed[0] if failed else None, "seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--label", default="current")
    ap.add_argument("--guards-only", action="store_true", help="run only each bug's own test "
                    "(no coverage run of the suite: minutes instead of most of an hour)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="offramp-planted-"))
    copies = [work / f"w{i}" for i in range(args.workers)]
    for c in copies:
        c.mkdir()
        mutation.make_copy(c, args.rev)
    # The coverage map covers every module a bug touches.
    mutation.CORE["extra"] = ["traces/summary.py", "core/execution.py", "common/atomic.py"]
    mutation.SKIP_TESTS.remove("test_cmd_traces.py")
    if not args.guards_only:
        cov = mutation.coverage_map(copies[0])
        for c in copies:
            (c / ".mutation" / "map.json").write_text(json.dumps(cov))
    chunks = [BUGS[i::args.workers] for i in range(args.workers)]
    with ThreadPoolExecutor(args.workers) as pool:
        jobs = zip(copies, chunks, strict=True)
        parts = list(pool.map(lambda cb: [run_bug(cb[0], b, args.guards_only) for b in cb[1]],
                              jobs))
    results = sorted((r for p in parts for r in p), key=lambda r: [b[0] for b in BUGS].index(r["bug"]))
    caught = sum(1 for r in results if r["caught"])
    print(f"{'bug':<32} {'caught':<7} {'guard':<6} first failing test")
    for r in results:
        mark = {True: "yes", False: "NO", None: "n/a"}[r["caught"]]
        own = {True: "fails", False: "PASSES", None: "-"}[r.get("guard_fails")]
        print(f"{r['bug']:<32} {mark:<7} {own:<6} {r.get('first_failure') or r.get('note') or ''}")
    print(f"\n{caught} of {len(results)} planted bugs caught (rev {args.rev})")
    out = mutation.REPO / "benchmarks" / "results" / f"planted-{args.label}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rev": args.rev, "caught": caught, "bugs": results}, indent=1) + "\n")
    subprocess.run(["rm", "-rf", str(work)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
