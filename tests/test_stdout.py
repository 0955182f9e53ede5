"""What a command prints on standard output is its own: ``--json`` output parses whole, even in
a fresh process whose first linear program (HiGHS, through cvxpy) would print a banner."""

from __future__ import annotations

import json
import subprocess
import sys


def test_json_output_of_a_fresh_process_solving_an_lp_parses(tmp_path):
    # The budgeted oracle solves an LP when it is fitted: the process's first HiGHS solver.
    cmd = [sys.executable, "-m", "offramp.analysis.cli", "simulate",
           "examples/fmnist-entropy-shrink.yaml", "--set", "policy.name=oracle",
           "--set", "policy.budget_ms=1.5", "--set", "run.requests=2000",
           "--set", "run.replications=1", "-o", str(tmp_path / "run"), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    doc = json.loads(out.stdout)
    assert doc["model_id"] == "fmnist-resnet"
    assert "HiGHS" not in out.stdout + out.stderr
