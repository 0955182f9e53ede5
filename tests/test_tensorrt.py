"""The TensorRT backend: its batch-size buckets always; engines only where TensorRT runs."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from offramp.profiling.backends.tensorrt import buckets

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not (HAVE_TRT and torch.cuda.is_available()),
                               reason="tensorrt is not importable here (or there is no CUDA GPU); "
                               "TensorRT has not been run in this project's CI")


def test_buckets_cover_the_batches_in_powers_of_two():
    assert buckets([1, 2, 3, 4, 5, 32, 33, 64]) == [(1, 1), (2, 2), (3, 4), (5, 8), (17, 32),
                                                   (33, 64)]
    assert buckets(list(range(1, 257))) == [(1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 32),
                                            (33, 64), (65, 128), (129, 256)]
    assert buckets([100]) == [(65, 128)]


@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_profile(precision, tmp_path):
    from offramp.profiling.format import validate_profile
    from offramp.profiling.measure import RunPolicy
    from offramp.profiling.profile_model import profile_model
    from offramp.traces.models import FmnistResNet

    torch.manual_seed(0)
    model = FmnistResNet(widths=(8, 16), strides=(1, 2)).eval()
    profile = profile_model(model, "tensorrt", "cuda", precision, model.example_input, [1, 3, 4],
                            RunPolicy(runs=3, warmup=2), "test", workdir=tmp_path)
    validate_profile(profile)
    details = profile.meta["backend_details"]
    assert details["optimization_profiles"] == [[1, 1], [3, 4]]
    tol = 1e-3 if precision == "fp32" else 5e-2
    assert max(details["trt_check_max_abs_diff"]) < tol
    assert "tensorrt" in profile.meta["software"]
