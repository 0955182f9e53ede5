"""MMPP and diurnal arrivals hit their analytic mean rates (and the MMPP its burstiness)."""

from __future__ import annotations

import numpy as np
import pytest

from offramp.sim.config import WorkloadConfig
from offramp.sim.processes import mean_rate, mmpp_idc
from offramp.sim.workload import open_loop_arrivals

ON_OFF = WorkloadConfig(kind="mmpp", rates_rps=[2000.0, 200.0], sojourn_s=[0.05, 0.2])


def _idc(times: np.ndarray, window_s: float) -> float:
    counts = np.bincount((times // window_s).astype(np.int64))[:-1]
    return float(counts.var() / counts.mean())


def test_mmpp_mean_rate_and_dispersion():
    rng = np.random.default_rng(3)
    t = open_loop_arrivals(ON_OFF, rng, duration_s=2000.0)
    # (2000 * 0.05 + 200 * 0.2) / 0.25 = 560 req/s
    assert mean_rate(ON_OFF) == pytest.approx(560.0)
    assert t.size / 2000.0 == pytest.approx(560.0, rel=0.03)  # 1 sd: 0.8% (IDC 75)
    assert np.all(np.diff(t) >= 0)
    # Counts in long windows: the asymptotic index of dispersion (Poisson: 1).
    assert mmpp_idc(ON_OFF) == pytest.approx(75.06, abs=0.01)
    assert _idc(t, 5.0) == pytest.approx(mmpp_idc(ON_OFF), rel=0.2)
    # rate_scale makes the same process faster; n requests is n requests.
    fast = ON_OFF.model_copy(update={"rate_scale": 2.0})
    assert mean_rate(fast) == pytest.approx(1120.0)
    assert open_loop_arrivals(fast, np.random.default_rng(3), n=5000).size == 5000


def test_diurnal_sine_and_curve(tmp_path):
    sine = WorkloadConfig(kind="diurnal", rate_rps=500.0, amplitude=0.8, period_s=10.0)
    t = open_loop_arrivals(sine, np.random.default_rng(1), duration_s=200.0)
    assert t.size / 200.0 == pytest.approx(500.0, rel=0.02)
    # The busiest quarter of each period (around its peak) carries far more than the calmest.
    phase = (t % 10.0) / 10.0
    peak, trough = ((phase > 0.125) & (phase < 0.375)).mean(), ((phase > 0.625) & (phase < 0.875)).mean()
    assert peak > 3 * trough
    curve = tmp_path / "day.csv"
    curve.write_text("rate_rps\n100\n300\n600\n200\n")
    cfg = WorkloadConfig(kind="diurnal", curve_path=str(curve), compress=60.0)  # 1 s a minute
    t = open_loop_arrivals(cfg, np.random.default_rng(2), duration_s=400.0)
    assert mean_rate(cfg) == pytest.approx(300.0)
    assert t.size / 400.0 == pytest.approx(300.0, rel=0.03)
    per_minute = np.bincount((t // 1.0).astype(np.int64) % 4) / 100.0
    assert per_minute == pytest.approx([100, 300, 600, 200], rel=0.05)


def test_bad_process_configs_name_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="one per state"):
        WorkloadConfig(kind="mmpp", rates_rps=[100.0], sojourn_s=[1.0])
    with pytest.raises(ValidationError, match="for kind 'mmpp'"):
        WorkloadConfig(kind="poisson", rates_rps=[1.0, 2.0])
    with pytest.raises(ValidationError, match="less than 1"):
        WorkloadConfig(kind="diurnal", amplitude=1.0)
