"""The run summary and the CI over replications, against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import crafted_trace

from offramp.sim.metrics import combine, measured_mask, summarize_run
from offramp.sim.records import RunRecords

# 3 exits; sample i is correct where ROWS[i] is True (crafted_trace: the last exit defines the
# full model, so agreement = (pred_k == pred_last)).
ROWS = [[True, True, True], [False, True, True], [False, False, True], [False, False, False],
        [True, False, False]]
TRACE = crafted_trace(ROWS, n_val=0)


def records(arrival, dispatch, finish, sample, exit_, batch_dispatch, batch_finish, batch_sizes,
            replica=None, batch=None):
    n = len(arrival)
    return RunRecords(
        arrival=np.array(arrival, float), sample=np.array(sample), dispatch=np.array(dispatch, float),
        finish=np.array(finish, float), exit=np.array(exit_),
        replica=np.zeros(n, int) if replica is None else np.array(replica),
        batch=np.zeros(n, int) if batch is None else np.array(batch),
        batch_replica=np.zeros(len(batch_dispatch), int),
        batch_dispatch=np.array(batch_dispatch, float), batch_finish=np.array(batch_finish, float),
        batch_sizes=np.array(batch_sizes))


# Ten requests, 1 ms apart; latencies 1..10 ms (request i waits 0.5 ms, then is served).
ARR = [i * 1e-3 for i in range(10)]
LAT = [(i + 1) * 1e-3 for i in range(10)]
REC = records(
    arrival=ARR, dispatch=[a + 0.5e-3 for a in ARR], finish=[a + w for a, w in zip(ARR, LAT, strict=True)],
    sample=[0, 1, 2, 3, 4, 0, 1, 2, 3, 4], exit_=[0, 1, 2, 2, 0, 1, 1, 2, 0, 2],
    # Two batches: [0, 4 ms] with sizes (5, 3, 2) and [5, 19 ms] with sizes (5, 4, 0).
    batch_dispatch=[0.0, 5e-3], batch_finish=[4e-3, 19e-3], batch_sizes=[[5, 3, 2], [5, 4, 0]],
    batch=[0] * 5 + [1] * 5)


def test_percentiles_throughput_window_without_warmup():
    out = summarize_run(REC, TRACE, 0.0, slo_ms=5.5, replicas=1)
    lat = np.arange(1, 11, dtype=float)
    assert out["requests"] == 10
    assert out["latency_mean_ms"] == pytest.approx(5.5)
    assert out["wait_mean_ms"] == pytest.approx(0.5)
    # The breakdown: every request queues 0.5 ms, then is in service latency - 0.5 ms.
    assert out["wait_p50_ms"] == pytest.approx(0.5) and out["wait_p99_ms"] == pytest.approx(0.5)
    assert out["in_service_mean_ms"] == pytest.approx(5.0)
    assert out["in_service_p50_ms"] == pytest.approx(5.0)
    assert out["in_service_p99_ms"] == pytest.approx(9.41)
    # numpy's linear percentile of 1..10: p50 = 5.5, p90 = 9.1, p95 = 9.55, p99 = 9.91.
    assert out["latency_p50_ms"] == pytest.approx(5.5)
    assert out["latency_p90_ms"] == pytest.approx(9.1)
    assert out["latency_p95_ms"] == pytest.approx(9.55)
    assert out["latency_p99_ms"] == pytest.approx(9.91)
    assert out["latency_p99.9_ms"] == pytest.approx(9.991)
    assert out["latency_max_ms"] == pytest.approx(10.0)
    assert out["latency_p99_ms"] == pytest.approx(np.percentile(lat, 99))
    # Window: first arrival (0) to last finish (9 + 10 = 19 ms).
    assert out["throughput_rps"] == pytest.approx(10 / 0.019)
    # SLO 5.5 ms: latencies 1..5 are within.
    assert out["slo_attainment"] == pytest.approx(0.5)
    assert out["goodput_rps"] == pytest.approx(5 / 0.019)


def test_accuracy_agreement_and_exit_fractions_are_scored_at_the_exit_taken():
    out = summarize_run(REC, TRACE, 0.0, slo_ms=None, replicas=1)
    # (sample, exit): (0,0) T, (1,1) T, (2,2) T, (3,2) F, (4,0) T, (0,1) T, (1,1) T, (2,2) T,
    # (3,0) F, (4,2) F -> 7 of 10 right.
    assert out["accuracy"] == pytest.approx(0.7)
    # Full model (last exit) on the same samples: samples 0, 1, 2 right, twice each -> 6/10.
    assert out["full_model_accuracy"] == pytest.approx(0.6)
    # Agreement with the last exit: crafted predictions are 0 where right, 1 where wrong.
    # (0,0) T, (1,1) T, (2,2) T, (3,2) T, (4,0) F, (0,1) T, (1,1) T, (2,2) T, (3,0) T, (4,2) T.
    assert out["agreement"] == pytest.approx(0.9)
    assert [out[f"exit_fraction_{k}"] for k in range(3)] == pytest.approx([0.3, 0.3, 0.4])
    assert "slo_attainment" not in out and "goodput_rps" not in out


def test_batch_sizes_service_time_and_utilisation():
    out = summarize_run(REC, TRACE, 0.0, slo_ms=None, replicas=1)
    assert out["batch_size_stage_0"] == pytest.approx(5.0)
    assert out["batch_size_stage_1"] == pytest.approx(3.5)
    # Stage 2 ran only in the first batch (size 2); a batch that skipped it does not count.
    assert out["batch_size_stage_2"] == pytest.approx(2.0)
    assert out["batch_time_mean_ms"] == pytest.approx((4 + 14) / 2)
    assert out["batch_time_p99_ms"] == pytest.approx(4 + 0.99 * 10)
    # Busy 4 + 14 = 18 ms of a 19 ms window; with 2 replicas half of that.
    assert out["utilisation"] == pytest.approx(18 / 19)
    assert summarize_run(REC, TRACE, 0.0, None, replicas=2)["utilisation"] == pytest.approx(9 / 19)


def test_warmup_leaves_out_the_first_arrivals_and_clips_the_window():
    # Warm-up 0.3: the first floor(3.0) = 3 arrivals go; window = 3 ms .. 19 ms.
    keep = measured_mask(REC, 0.3)
    assert keep.tolist() == [False] * 3 + [True] * 7
    out = summarize_run(REC, TRACE, 0.3, slo_ms=None, replicas=1)
    assert out["requests"] == 7
    assert out["latency_mean_ms"] == pytest.approx(np.mean(np.arange(4, 11)))
    assert out["latency_p50_ms"] == pytest.approx(7.0)
    assert out["throughput_rps"] == pytest.approx(7 / 0.016)
    # Only the second batch was dispatched inside [3, 19] ms; it is busy for 14 ms of 16,
    # and the first batch's busy time inside the window is 4 - 3 = 1 ms.
    assert out["batch_time_mean_ms"] == pytest.approx(14.0)
    assert out["batch_size_stage_1"] == pytest.approx(4.0)
    assert out["batch_size_stage_2"] == 0.0
    assert out["utilisation"] == pytest.approx(15 / 16)
    # Out of order arrivals: the warm-up is by arrival time, not by row.
    shuffled = records(arrival=[3e-3, 1e-3, 2e-3, 0.0], dispatch=[4e-3] * 4, finish=[5e-3] * 4,
                       sample=[0] * 4, exit_=[0] * 4, batch_dispatch=[4e-3], batch_finish=[5e-3],
                       batch_sizes=[[4, 0, 0]])
    assert measured_mask(shuffled, 0.5).tolist() == [True, False, True, False]
    assert measured_mask(shuffled, 0.49).tolist() == [True, True, True, False]


def test_combine_mean_and_student_t_interval():
    out = combine([{"x": 1.0, "y": 4.0}, {"x": 2.0, "y": 4.0}, {"x": 3.0, "y": 4.0}])
    # t_{0.975, 2} = 4.302652730; s = 1.
    assert out["x"]["mean"] == pytest.approx(2.0)
    assert out["x"]["ci95"] == pytest.approx(4.302652729911275 / math.sqrt(3), rel=1e-9)
    assert out["x"]["values"] == [1.0, 2.0, 3.0]
    assert out["y"]["ci95"] == 0.0
    two = combine([{"x": 1.0}, {"x": 3.0}])
    # t_{0.975, 1} = 12.7062; s = sqrt(2); n = 2.
    assert two["x"]["ci95"] == pytest.approx(12.706204736174698, rel=1e-9)
    one = combine([{"x": 5.0}])
    assert one["x"]["mean"] == 5.0 and math.isnan(one["x"]["ci95"])


def test_window_edges_and_single_sample_stages():
    # Two requests; the measured window starts at the first arrival (0), where a batch is
    # dispatched at once (max_wait 0): it counts. Its stages ran at sizes 2, 1, 1.
    rec = records(arrival=[0.0, 1e-3], dispatch=[0.0, 2e-3], finish=[2e-3, 5e-3], sample=[0, 1],
                  exit_=[2, 1], batch_dispatch=[0.0, 2e-3], batch_finish=[2e-3, 5e-3],
                  batch_sizes=[[1, 1, 1], [1, 1, 0]], batch=[0, 1])
    out = summarize_run(rec, TRACE, 0.0, None, 1)
    assert out["batch_time_mean_ms"] == pytest.approx((2 + 3) / 2)
    assert out["batch_size_stage_2"] == pytest.approx(1.0)
    assert out["batch_size_stage_1"] == pytest.approx(1.0)
    # Busy 2 + 3 = 5 ms of a 5 ms window on one replica.
    assert out["utilisation"] == pytest.approx(1.0)
    assert out["wait_mean_ms"] == pytest.approx(0.5)
