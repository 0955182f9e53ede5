"""The bring-your-own-model example (examples/own-model), run as its README says: a network
defined outside offramp, trained on scikit-learn's real digits data, recorded, profiled and
simulated through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offramp.analysis.cli import main
from offramp.common.errors import InputError
from offramp.profiling.format import load_profile
from offramp.traces.format import load_trace

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "own-model"
pytest.importorskip("sklearn")


def test_own_model_record_profile_simulate(tmp_path, monkeypatch, capsys):
    work = tmp_path / "own-model"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    monkeypatch.chdir(work)
    assert main(["traces", "record", "--model-factory", "digits_exits:make_model",
                 "--model-arg", "epochs=30", "--data-factory", "digits_exits:make_data",
                 "--dataset", "sklearn-digits", "-o", "runs/digits.npz"]) == 0
    trace = load_trace("runs/digits.npz")
    assert trace.model_id == "digits-mlp" and trace.n_exits == 3 and not trace.meta["synthetic"]
    assert trace.indices("val").size == 450 and trace.indices("test").size == 450
    acc = trace.accuracy("test")
    assert acc[-1] > 0.9 and acc[0] < acc[-1]  # a real, trained network; the first exit weaker
    assert trace.meta["produced_by"]["model_factory"] == "digits_exits:make_model"
    assert main(["profile", "run", "--model-factory", "digits_exits:make_model",
                 "--model-arg", "epochs=1", "--batches", "1-16", "--runs", "20", "--warmup",
                 "2", "--quiet", "-o", "runs/digits-cpu.json"]) == 0
    prof = load_profile("runs/digits-cpu.json")
    assert prof.model_id == "digits-mlp" and prof.n_exits == 3
    assert "--model-factory digits_exits:make_model" in prof.meta["produced_by"]["command"]
    capsys.readouterr()
    assert main(["simulate", "study.yaml", "-o", "runs/sim", "--json",
                 "--set", "run.requests=3000", "--set", "run.replications=2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    exits = [doc["metrics"][f"exit_fraction_{k}"]["mean"] for k in range(3)]
    assert exits[0] > 0.3 and abs(sum(exits) - 1) < 1e-9
    # Every policy's accuracy against cost on it, with the oracle bound.
    assert main(["frontier", "--trace", "runs/digits.npz", "--profile", "runs/digits-cpu.json",
                 "--max-batch", "16", "--eenet-fits", "1", "--eenet-epochs", "5",
                 "-o", "runs/frontier"]) == 0
    assert (work / "runs" / "frontier" / "digits-frontier.png").is_file()  # the trace file's name
    assert main(["report", "runs/frontier"]) == 0  # its page: plot, best points, bound
    page = (work / "runs" / "frontier" / "report.html").read_text()
    assert "offramp frontier:" in page and "the oracle bound" in page
    assert "at each budget" in page and "paired 95% CI" in page  # the fair comparison, as text
    # The chosen config, run for real on the user's model (profile measured in the loop).
    assert main(["validate", "study.yaml", "--model-factory", "digits_exits:make_model",
                 "--model-arg", "epochs=30", "--data-factory", "digits_exits:make_data",
                 "--rates", "800", "--modes", "none,shrink", "--repeats", "1", "--requests",
                 "600", "--profile-runs", "5", "--sim-replications", "1", "--quiet",
                 "-o", "runs/validate"]) == 0
    doc = json.loads(Path("runs/validate/validation.json").read_text())
    assert doc["plan"]["model_factory"] == "digits_exits:make_model"
    match = [r for r in doc["table"] if r["stat"] == "exit_match"]
    assert len(match) == 2 and all(r["median"] > 0.95 for r in match)
    runs = pd.read_parquet("runs/validate/real.parquet")
    assert len(runs) == 2 * 600 and (runs["dispatch_s"] >= runs["arrival_s"]).all()


def test_own_model_on_onnx_runtime(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(EXAMPLE)
    out = tmp_path / "ort.json"
    assert main(["profile", "run", "--model-factory", "digits_exits:make_model", "--model-arg",
                 "epochs=1", "--backend", "onnxruntime", "--batches", "1-4", "--runs", "10",
                 "--warmup", "2", "--quiet", "-o", str(out)]) == 0
    prof = load_profile(out)
    assert prof.meta["backend"] == "onnxruntime" and prof.model_id == "digits-mlp"


def test_bad_factory_is_one_error(tmp_path, monkeypatch):
    from offramp.common.factory import call_factory

    monkeypatch.chdir(EXAMPLE)
    with pytest.raises(InputError, match="package.module:function"):
        call_factory("digits_exits.make_model", [], "--model-factory", "--model-arg")
    with pytest.raises(InputError, match="has no 'nope'"):
        call_factory("digits_exits:nope", [], "--model-factory", "--model-arg")
    with pytest.raises(InputError, match="the call failed"):
        call_factory("digits_exits:make_model", ["colour=3"], "--model-factory", "--model-arg")


class _Tiny:
    """A 2-exit model (synthetic, tests only) following the protocol, or breaking it."""

    def __init__(self, mismatch: bool = False, numpy_input: bool = False):
        import torch

        self.segments = torch.nn.ModuleList([torch.nn.Linear(4, 8),
                                             torch.nn.Linear(5 if mismatch else 8, 8)])
        self.heads = torch.nn.ModuleList([torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)])
        self.numpy_input = numpy_input
        self.model_id = "tiny"

    def example_input(self, b):
        import numpy as np
        import torch

        return np.zeros((b, 4), np.float32) if self.numpy_input else torch.zeros(b, 4)

    def eval(self):
        return self


def test_a_model_or_data_off_the_protocol_is_the_users_error_with_the_fix():
    import numpy as np
    import torch

    from offramp.traces.own import check_model, record_from_loaders

    check_model(_Tiny())
    with pytest.raises(InputError, match=r"example_input\(2\).*is a ndarray, not a torch.Tensor"):
        check_model(_Tiny(numpy_input=True), "my:factory")
    with pytest.raises(InputError, match="the model failed on it .RuntimeError") as err:
        check_model(_Tiny(mismatch=True), "my:factory")
    assert "segment k takes what segment k-1 gives" in err.value.fix
    x, y = np.zeros((4, 4), np.float32), np.zeros(4, int)
    with pytest.raises(InputError, match=r"val\[0\] inputs.*not a torch.Tensor") as err:
        record_from_loaders(_Tiny(), {"val": [(x, y)], "test": [(x, y)]}, dataset="d")
    assert "torch.as_tensor" in err.value.fix
    ok = record_from_loaders(_Tiny(), {"val": [(torch.as_tensor(x), y)] * 2,
                                       "test": [(torch.as_tensor(x), y)] * 2}, dataset="d")
    assert ok.n_exits == 2 and ok.n_samples == 16


BAD_DATA = '''
import numpy as np
import torch

X, Y = np.zeros((4, 4), np.float32), np.arange(4) % 3


def good():
    return {"val": [(torch.as_tensor(X), Y)], "test": (b for b in [(torch.as_tensor(X), Y)] * 2)}


def numpy_inputs():
    return {"val": [(X, Y)], "test": [(X, Y)]}


def a_list():
    return [(torch.as_tensor(X), Y)]


def only_test():
    return {"test": [(torch.as_tensor(X), Y)]}


def triples():
    return {"val": [(torch.as_tensor(X), Y, 0)], "test": [(torch.as_tensor(X), Y, 0)]}


def not_batches():
    return {"val": 3, "test": 3}
'''


@pytest.mark.parametrize("factory, match", [
    ("numpy_inputs", r"field 'test\[0\] inputs': is a ndarray, not a torch.Tensor"),
    ("a_list", r"must give \{'val': batches, 'test': batches\}, got a list"),
    ("only_test", r"must give \{'val': batches, 'test': batches\}, got \['test'\]"),
    ("triples", r"field 'test\[0\]': must be an \(inputs, labels\) pair, got 3 items"),
    ("not_batches", r"field 'test': is not an iterable of \(inputs, labels\) batches"),
])
def test_validate_checks_a_data_factory_as_record_does(factory, match, tmp_path, monkeypatch):
    """``offramp validate`` reads the user's test batches through the check ``traces record``
    uses: data off the protocol is the user's error, naming the factory and the fix."""
    from offramp.analysis.validation.prepare import own_test_inputs
    from offramp.common.factory import call_factory
    from offramp.traces.own import record_from_loaders

    (tmp_path / "offramp_test_data_factories.py").write_text(BAD_DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = "offramp_test_data_factories:good"
    trace = record_from_loaders(_Tiny(), call_factory(spec, [], "--data-factory", ""),
                                dataset="d", source=spec)
    ids, parts = own_test_inputs(trace, {"data_factory": spec})
    assert np.array_equal(ids, trace.indices("test")) and parts[0].shape == (8, 4)
    spec = f"offramp_test_data_factories:{factory}"
    with pytest.raises(InputError, match=match) as err:
        own_test_inputs(trace, {"data_factory": spec})
    assert err.value.source == spec and "the protocol: offramp.traces.own" in err.value.fix
    with pytest.raises(InputError) as same:  # one rule: record says the same (of val, first)
        record_from_loaders(_Tiny(), call_factory(spec, [], "--data-factory", ""),
                            dataset="d", source=spec)
    assert (same.value.problem, same.value.fix) == (err.value.problem, err.value.fix)
