"""The shipped traces load, validate, match their metadata and meet the accuracy bars."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from offramp.common.errors import InputError
from offramp.traces.format import validate_trace
from offramp.traces.shipped import (
    DATA_DIR,
    SHIPPED,
    list_shipped,
    load_shipped,
    provenance,
    resolve_trace,
    shipped_trace_path,
)

pytestmark = pytest.mark.skipif(not all((DATA_DIR / f).is_file() for f in SHIPPED.values()),
                                reason="shipped traces not built yet")


@pytest.fixture(scope="module")
def fmnist():
    return load_shipped("fmnist-resnet")


@pytest.fixture(scope="module")
def rt():
    return load_shipped("rt-minilm6")


def _common(trace, name: str, dataset: str) -> None:
    validate_trace(trace)
    assert trace.model_id == name and trace.meta["dataset"] == dataset
    assert trace.meta["synthetic"] is False
    assert trace.softmax is not None
    prov = trace.meta["produced_by"]
    for key in ("command", "torch", "numpy", "python", "date", "seed"):
        assert key in prov
    assert prov["command"].startswith("offramp traces record")
    sizes = trace.meta["split_sizes"]
    assert sizes == {"val": len(trace.indices("val")), "test": len(trace.indices("test"))}
    pos = trace.meta["exit_positions"]
    assert all(b > a for a, b in zip(pos, pos[1:], strict=False)) and pos[-1] == 1.0
    assert trace.meta["full_model_accuracy"] == pytest.approx(trace.accuracy("test")[-1])


def test_fmnist_trace(fmnist):
    _common(fmnist, "fmnist-resnet", "fashion-mnist")
    assert len(fmnist.indices("test")) == 10000 and len(fmnist.indices("val")) == 5000
    assert fmnist.n_exits >= 4 and fmnist.n_classes == 10
    assert fmnist.accuracy("test")[-1] >= 0.92
    assert np.bincount(fmnist.labels[fmnist.indices("test")]).tolist() == [1000] * 10


def test_rt_trace(rt):
    _common(rt, "rt-minilm6", "rotten-tomatoes")
    assert len(rt.indices("test")) >= 2000 and rt.n_exits == 6 and rt.n_classes == 2
    assert rt.accuracy("test")[-1] >= 0.75


def test_later_exits_are_better_on_average(fmnist, rt):
    for trace in (fmnist, rt):
        acc = trace.accuracy("test")
        assert acc[-1] > acc[0]


def test_list_and_resolve():
    rows = list_shipped()
    assert [r["name"] for r in rows] == sorted(SHIPPED)
    assert resolve_trace("fmnist-resnet") == shipped_trace_path("fmnist-resnet")
    with pytest.raises(InputError, match="no shipped trace named"):
        shipped_trace_path("resnet-9000")


def test_provenance_covers_shipped_files(fmnist, rt):
    prov = provenance()
    for name, trace in (("fmnist-resnet", fmnist), ("rt-minilm6", rt)):
        entry = prov["files"][SHIPPED[name]]
        assert entry["command"].startswith("offramp traces record")
        assert entry["machine"]["device"] == "cpu"
        assert entry["test_accuracy_per_exit"] == [round(float(a), 4)
                                                   for a in trace.accuracy("test")]
    for f in prov["files"]:
        assert (DATA_DIR / f).is_file()


def test_shipped_cnn_checkpoint_reproduces_trace(fmnist):
    ckpt = DATA_DIR / "fmnist-resnet.pt"
    if not ckpt.is_file():
        pytest.skip("CNN checkpoint not shipped")
    from offramp.traces.checkpoint import load_checkpoint
    from offramp.traces.datasets import FMNIST_DEFAULT_DIR, load_fashion_mnist
    from offramp.traces.models import images_to_tensor

    if not (FMNIST_DEFAULT_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist not installed")
    model, _ = load_checkpoint(ckpt)
    test = load_fashion_mnist().test.subset(200)
    with torch.no_grad():
        pred = torch.stack(model.forward_exits(images_to_tensor(test.x)), 1).argmax(2).numpy()
    idx = fmnist.indices("test")[:200]
    assert np.array_equal(fmnist.labels[idx], test.y)
    assert (pred == fmnist.pred[idx]).mean() > 0.99


def test_fmnist_c_is_the_same_network_on_corrupted_images(fmnist):
    from offramp.traces.corruptions import describe
    from offramp.traces.shipped import recorded_checkpoint

    hard = load_shipped("fmnist-c")
    _common(hard, "fmnist-resnet", "fashion-mnist-c")
    assert hard.meta["corruptions"] == describe()
    assert np.array_equal(hard.labels, fmnist.labels)  # the same images, corrupted
    assert hard.accuracy("test")[-1] < fmnist.accuracy("test")[-1]  # harder
    assert hard.accuracy("test")[-1] >= 0.80
    assert recorded_checkpoint(hard) == DATA_DIR / "fmnist-c-resnet.pt"
    assert recorded_checkpoint(fmnist) == DATA_DIR / "fmnist-resnet.pt"
    entry = provenance()["files"][SHIPPED["fmnist-c"]]
    assert entry["test_accuracy_per_exit"] == [round(float(a), 4) for a in hard.accuracy("test")]


def test_shipped_fmnist_c_checkpoint_reproduces_its_trace():
    from offramp.traces.checkpoint import load_checkpoint
    from offramp.traces.datasets import FMNIST_DEFAULT_DIR, load_dataset
    from offramp.traces.models import images_to_tensor

    if not (FMNIST_DEFAULT_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist not installed")
    hard = load_shipped("fmnist-c")
    model, _ = load_checkpoint(DATA_DIR / "fmnist-c-resnet.pt")
    test = load_dataset("fashion-mnist-c").test.subset(200)
    with torch.no_grad():
        pred = torch.stack(model.forward_exits(images_to_tensor(test.x)), 1).argmax(2).numpy()
    idx = hard.indices("test")[:200]
    assert (pred == hard.pred[idx]).mean() > 0.99


def test_validate_serves_fmnist_c_its_own_checkpoint_and_corrupted_images():
    from offramp.analysis.validation.prepare import _recorded, test_inputs
    from offramp.traces.datasets import FMNIST_DEFAULT_DIR, load_dataset
    from offramp.traces.models import images_to_tensor

    if not (FMNIST_DEFAULT_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist not installed")
    hard = load_shipped("fmnist-c")
    assert _recorded(hard) == str(DATA_DIR / "fmnist-c-resnet.pt")
    assert _recorded(load_shipped("fmnist-resnet")) is None  # the model's default checkpoint
    ids, (x,) = test_inputs(hard)
    want = images_to_tensor(load_dataset("fashion-mnist-c").test.x[:50]).numpy()
    np.testing.assert_array_equal(x[:50], want)
    assert np.array_equal(ids, hard.indices("test"))
