"""Measuring stage latencies per batch size (CPU here; CUDA-only backends skip without a GPU)."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from offramp.common.errors import InputError
from offramp.profiling.backends import backend_names, get_backend
from offramp.profiling.format import validate_profile
from offramp.profiling.measure import (
    HostTimer,
    RunPolicy,
    default_batches,
    parse_batches,
    stage_plan,
    summarize,
    time_call,
)
from offramp.profiling.profile_model import profile_model
from offramp.traces.models import FmnistResNet

FEW = RunPolicy(runs=3, warmup=1, warmup_s=0.01)


def tiny_cnn() -> FmnistResNet:
    torch.manual_seed(0)
    return FmnistResNet(widths=(8, 16), strides=(1, 2)).eval()


def test_default_batches():
    sizes = default_batches()
    assert sizes[:64] == list(range(1, 65))
    assert sizes[64:] == [72, 80, 88, 96, 104, 112, 120, 128, 160, 192, 224, 256]
    assert default_batches(32) == list(range(1, 33))


def test_parse_batches():
    assert parse_batches("1-4,8,16-32:8") == [1, 2, 3, 4, 8, 16, 24, 32]
    assert parse_batches("4, 2,2") == [2, 4]
    for bad in ("0-4", "4-2", "x", "1-8:0", ""):
        with pytest.raises(InputError, match="--batches"):
            parse_batches(bad)


def test_run_policy_slow_stages_get_fewer_runs():
    policy = RunPolicy(runs=100, slow_ms=50, slow_runs=20)
    assert policy.runs_for(10.0) == 100 and policy.runs_for(60.0) == 20
    assert RunPolicy(runs=100).runs_for(1e6) == 100


def test_summarize_and_time_call():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["p50_ms"] == 3.0 and s["mean_ms"] == 22.0 and s["runs"] == 5
    assert s["p50_ms"] <= s["p99_ms"] <= 100.0
    assert summarize([2.0])["std_ms"] == 0.0
    calls = []
    times = time_call(lambda: calls.append(1), HostTimer(), RunPolicy(runs=7, warmup=3))
    assert len(times) == 7 and len(calls) == 10 and all(t >= 0 for t in times)


@pytest.mark.parametrize("backend", ["eager", "onnxruntime"])
def test_cpu_measurement_gives_a_valid_profile(backend):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    model = tiny_cnn()
    batches = [1, 3]
    seen = []
    profile = profile_model(model, backend, "cpu", "fp32", model.example_input, batches, FEW,
                            command="test", progress=lambda *s: seen.append(s))
    validate_profile(profile)
    plan = stage_plan(2, batches, loop=backend == "eager")
    assert seen == plan
    assert [(r["kind"], r["k"], r["batch"]) for r in profile.rows] == plan
    loop = {"check", "handoff"} if backend == "eager" else set()
    assert {r["kind"] for r in profile.rows} == {"segment", "head", "compact", "overhead"} | loop
    assert all(r["runs"] == 3 for r in profile.rows)
    m = profile.meta
    assert (m["model_id"], m["n_exits"], m["backend"], m["precision"]) == \
        ("fmnist-resnet", 2, backend, "fp32")
    assert m["synthetic"] is False and m["input_shape"] == [1, 28, 28]
    assert m["software"]["torch"] == torch.__version__ and m["produced_by"]["command"] == "test"
    assert m["compact_source_batch"] == 3 and m["torch_threads"] >= 1


def test_tuple_activation_model_measures():
    from test_segments import TupleNet

    model = TupleNet().eval()
    profile = profile_model(model, "eager", "cpu", "fp32", model.example_input, [2], FEW, "t")
    # Segments, heads, compactions; overhead, checks and handoffs from the serving loop.
    assert profile.n_exits == 3 and len(profile.rows) == 3 + 3 + 2 + 1 + 2 + 2


def test_unsupported_combinations_are_input_errors():
    with pytest.raises(InputError, match="fp32 only"):
        get_backend("eager")(tiny_cnn(), "cpu", "fp16")
    with pytest.raises(InputError, match="runs on cuda"):
        get_backend("cudagraph")(tiny_cnn(), "cpu", "fp32")
    with pytest.raises(InputError, match="unknown backend"):
        get_backend("tvm")
    assert backend_names() == ["eager", "cudagraph", "onnxruntime", "tensorrt"]


def test_measurement_modules_import_only_torch_numpy_stdlib():
    """The GPU-side modules must not pull in pandas, pydantic, simpy, yaml or rich."""
    heavy = ("pandas", "pydantic", "simpy", "yaml", "rich", "matplotlib", "onnxruntime")
    code = ("import sys\n"
            "import offramp.profiling.measure, offramp.profiling.segments\n"
            "import offramp.profiling.backends.eager, offramp.profiling.backends.cudagraph\n"
            "import offramp.profiling.backends.tensorrt, offramp.profiling.backends.onnxruntime\n"
            "import offramp.profiling.job, offramp.profiling.summary, offramp.profiling.shipped\n"
            "import offramp.profiling.real_runs, offramp.profiling.validate_real\n"
            "import offramp.analysis.cli.profile\n"
            f"print([m for m in {heavy!r} if m in sys.modules])\n")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert importlib.util.find_spec("offramp.profiling.measure") is not None


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available here")


@cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("backend", ["cudagraph", "eager"])
def test_cuda_measurement(backend, precision):
    model = tiny_cnn()
    profile = profile_model(model, backend, "cuda", precision, model.example_input, [1, 4], FEW,
                            "test")
    validate_profile(profile)
    assert profile.meta["device"] == torch.cuda.get_device_name()
    assert profile.meta["timer"].startswith("CUDA events")


@cuda
def test_cudagraph_replay_matches_eager():
    model = tiny_cnn().cuda()
    backend = get_backend("cudagraph")(model, "cuda", "fp32")
    acts = backend.activations(model.example_input(4))
    replay = backend.segment(0, acts[0])
    replay()
    torch.cuda.synchronize()
    graph_out = backend._graphs[-1][2]
    assert torch.allclose(graph_out, acts[1], atol=1e-5)
    backend.release()
