"""The latency-profile file: round trip, validation, and matching a profile to a trace."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from offramp.common.errors import InputError
from offramp.profiling.format import (
    LatencyProfile,
    check_profile_matches,
    load_profile,
    save_profile,
    validate_profile,
)
from offramp.profiling.measure import RunPolicy
from offramp.profiling.profile_model import profile_model
from offramp.profiling.shipped import list_shipped, shipped_profile_path
from offramp.profiling.synthetic import synthetic_profile
from offramp.traces.synthetic import synthetic_trace

TRACES = Path(__file__).resolve().parent.parent / "traces" / "data"


@pytest.fixture(scope="module")
def measured() -> LatencyProfile:
    import torch

    from offramp.traces.models import FmnistResNet

    torch.manual_seed(0)
    model = FmnistResNet(widths=(8, 16), strides=(1, 2)).eval()
    return profile_model(model, "eager", "cpu", "fp32", model.example_input, [1, 2],
                         RunPolicy(runs=3, warmup=1, warmup_s=0.01), "test")


def test_measured_profile_round_trip(measured, tmp_path):
    path = save_profile(measured, tmp_path / "p.json")
    back = load_profile(path)
    assert back.rows == measured.rows
    assert back.meta == json.loads(json.dumps(measured.meta))
    assert back.source == str(path) and back.model_id == "fmnist-resnet" and back.n_exits == 2
    assert [r["batch"] for r in back.stage("segment", 1)] == [1, 2]


def test_synthetic_profile_round_trip(tmp_path):
    p = synthetic_profile(n_exits=3)
    back = load_profile(save_profile(p, tmp_path / "s.json"))
    assert back.rows == p.rows and back.meta["synthetic"] is True


@pytest.mark.parametrize("field, change, message", [
    ("p99_ms", 0.0, "p99"),
    ("kind", "layer", "is not one of"),
    ("k", 7, "out of range"),
    ("runs", 0, "positive integer"),
    ("p50_ms", float("nan"), "finite"),
])
def test_bad_rows_are_rejected(measured, field, change, message):
    rows = copy.deepcopy(measured.rows)
    if field == "p99_ms":
        rows[0]["p50_ms"] = rows[0]["p99_ms"] + 1.0
    else:
        rows[0][field] = change
    with pytest.raises(InputError, match=message):
        validate_profile(LatencyProfile(rows=rows, meta=measured.meta))


def test_missing_meta_and_bad_files(measured, tmp_path):
    meta = dict(measured.meta)
    del meta["device"]
    with pytest.raises(InputError, match="meta.device"):
        validate_profile(LatencyProfile(rows=measured.rows, meta=meta))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_profile(bad)
    with pytest.raises(InputError, match="no such profile"):
        load_profile(tmp_path / "absent.json")


def test_mismatched_profile_is_rejected_naming_both(measured):
    trace = synthetic_trace(n_samples=50, n_exits=4)
    with pytest.raises(InputError) as err:
        check_profile_matches(measured, trace.model_id, trace.n_exits, "t.npz")
    assert "2 exits" in str(err.value) and "has 4" in str(err.value)
    trace2 = synthetic_trace(n_samples=50, n_exits=2)
    with pytest.raises(InputError) as err:
        check_profile_matches(measured, trace2.model_id, trace2.n_exits, "t.npz")
    assert "'fmnist-resnet'" in str(err.value) and "'synthetic-net'" in str(err.value)
    check_profile_matches(measured, "fmnist-resnet", 2)


@pytest.mark.parametrize("name", list_shipped())
def test_shipped_profiles_validate_and_match_their_traces(name):
    profile = load_profile(shipped_profile_path(name))
    assert profile.meta["synthetic"] is False
    sizes = {r["batch"] for r in profile.rows}
    assert set(range(1, 33)) <= sizes and max(sizes) >= 64
    # Format version 2: the serving loop's own stages were measured in the loop.
    assert {r["kind"] for r in profile.rows} == {"segment", "head", "compact", "overhead", "check",
                                                 "handoff"}
    assert "inside the serving loop" in profile.meta["loop_stages"]
    trace_path = TRACES / f"{profile.model_id}.npz"
    if not trace_path.exists():
        pytest.skip(f"no shipped trace {trace_path.name}")
    from offramp.traces.format import load_trace

    trace = load_trace(trace_path)
    check_profile_matches(profile, trace.model_id, trace.n_exits, str(trace_path))
