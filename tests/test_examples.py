"""Every example study validates, resolves its trace, profile and policy, runs (briefly), and
its records obey the configuration it states."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from offramp.analysis.study.config import load_config
from offramp.analysis.study.run import run_study

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_as_configured(path):
    cfg = load_config(path)
    short = {"replications": 1, "warmup_fraction": 0.0}
    short.update({"requests": 500, "duration_s": None} if cfg.run.requests else {"duration_s": 0.5})
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update=short)})
    out = run_study(cfg, path.parent)
    rec, trace, srv = out.result.records[0], out.trace, cfg.server
    n = rec.arrival.size
    if cfg.run.requests:
        assert n == 500
    else:
        assert n > 0 and rec.arrival.max() <= 0.5
    # Requests carry test samples; the summary scores them at the exit they took.
    assert np.isin(rec.sample, trace.indices("test")).all()
    assert out.result.runs[0]["accuracy"] == pytest.approx(trace.correct[rec.sample, rec.exit].mean())
    # The batcher's and executor's rules.
    sizes = rec.batch_sizes
    assert 1 <= sizes[:, 0].min() and sizes[:, 0].max() <= srv.max_batch
    assert (np.diff(sizes, axis=1) <= 0).all()
    if srv.exit_mode == "none":
        assert (rec.exit == trace.n_exits - 1).all()
    if srv.exit_mode == "keep":
        ran = sizes > 0
        assert (sizes[ran] == np.broadcast_to(sizes[:, :1], sizes.shape)[ran]).all()
    assert set(np.unique(rec.replica)) <= set(range(srv.replicas))
    if srv.replicas > 1:
        assert np.unique(rec.replica).size == srv.replicas
    if cfg.workload.kind == "closed":
        # Never more requests in the system than clients.
        events = np.r_[np.ones(n), -np.ones(n)][np.argsort(np.r_[rec.arrival, rec.finish],
                                                           kind="stable")]
        assert np.cumsum(events).max() <= cfg.workload.clients


def test_requests_break_latency_into_queueing_and_service(tmp_path, capsys):
    import pandas as pd

    from offramp.analysis.cli import main

    study = Path(__file__).resolve().parent.parent / "examples" / "capacity-fmnist.yaml"
    assert main(["simulate", str(study), "--set", "run.requests=3000", "-o",
                 str(tmp_path / "run"), "--breakdown"]) == 0
    printed = capsys.readouterr().out
    frame = pd.read_parquet(tmp_path / "run" / "requests.parquet")
    # queue + service = latency, per request, to the microsecond; both parts non-negative.
    assert ((frame.queue_ms + frame.service_ms - frame.latency_ms).abs() < 1e-3).all()
    assert (frame.queue_ms >= 0).all() and (frame.service_ms > 0).all()
    # ... and service = the time in each stage kind, to the microsecond (shrink: all of them).
    kinds = ["overhead_ms", "segment_ms", "head_ms", "check_ms", "compact_ms", "handoff_ms"]
    assert ((frame[kinds].sum(axis=1) - frame.service_ms).abs() < 1e-3).all()
    assert (frame[kinds] >= 0).all().all() and (frame[["segment_ms", "head_ms"]] > 0).all().all()
    # Requests that leave at the first exit never pay compaction; later leavers do.
    assert (frame.compact_ms[frame.exit_index == 0] == 0).all()
    assert (frame.compact_ms[frame.exit_index > 0] > 0).any()
    doc = json.loads((tmp_path / "run" / "summary.json").read_text())
    kept = frame[~frame.warmup & (frame.replication == 0)]
    assert doc["per_replication"][0]["wait_p99_ms"] == pytest.approx(kept.queue_ms.quantile(0.99))
    run0 = doc["per_replication"][0]
    assert run0["stage_segment_p99_ms"] == pytest.approx(kept.segment_ms.quantile(0.99))
    assert run0["stage_check_mean_ms"] == pytest.approx(kept.check_ms.mean())
    # --breakdown prints the table: the segments' mean time as the summary has it.
    assert "where a request's time goes" in printed
    # The busy fraction says whose time it is: the profile's device, not "GPU".
    assert f"busy fraction of the replicas ({doc['stage_costs']['device']} time)" in printed
    assert f"{doc['metrics']['stage_segment_mean_ms']['mean']:.3f}" in printed
    assert main(["report", str(tmp_path / "run")]) == 0
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Where a request&#x27;s time goes" in page or "Where a request's time goes" in page
