"""Fashion-MNIST-C: the corruption mix is fixed, documented and does what its table says."""

from __future__ import annotations

import numpy as np
import pytest

from offramp.common.errors import InputError
from offramp.traces import corruptions as C
from offramp.traces.datasets import FMNIST_DEFAULT_DIR, load_dataset
from offramp.traces.train import load_data

HAVE_FMNIST = (FMNIST_DEFAULT_DIR / "t10k-labels-idx1-ubyte.gz").is_file()


def _images(n: int = 400, seed: int = 0) -> np.ndarray:
    """Blobs on a black ground, like Fashion-MNIST's (synthetic: tests only)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    img = np.zeros((n, 28, 28))
    for i in range(n):
        cy, cx, r = rng.uniform(9, 19), rng.uniform(9, 19), rng.uniform(5, 9)
        img[i] = 230 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
    return img.astype(np.uint8)


def test_assignment_shares_and_determinism():
    kinds, sev = C.assign(20000, np.random.default_rng(1))
    clean = kinds == int(C.Corruption.CLEAN)
    assert abs(clean.mean() - C.CLEAN_SHARE) < 0.01
    assert (sev[clean] == 0).all() and set(np.unique(sev[~clean])) == set(C.SEVERITIES)
    counts = np.bincount(kinds[~clean], minlength=len(C.KINDS))
    assert counts.min() > 0.9 * counts.mean()
    a, b = C.corrupt_split(_images(), "test"), C.corrupt_split(_images(), "test")
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], C.corrupt_split(_images(), "val")[0])


@pytest.mark.parametrize("kind", C.KINDS)
def test_each_kind_hurts_more_with_severity_and_leaves_clean_images_alone(kind):
    x = _images(200)
    change = []
    for sev in C.SEVERITIES:
        out = C.corrupt(x, np.full(len(x), int(kind)), np.full(len(x), sev),
                        np.random.default_rng(0))
        assert out.dtype == np.uint8 and out.shape == x.shape
        change.append(np.abs(out.astype(float) - x).mean())
    assert all(np.diff(change) > 0), change
    same = C.corrupt(x, np.full(len(x), -1), np.zeros(len(x), int), np.random.default_rng(0))
    np.testing.assert_array_equal(same, x)


def test_contrast_keeps_each_image_mean_and_occlusion_is_one_grey_square():
    x = _images(50)
    low = C.corrupt(x, np.full(50, int(C.Corruption.CONTRAST)), np.full(50, 5),
                    np.random.default_rng(0))
    np.testing.assert_allclose(low.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=1.0)
    occ = C.corrupt(x, np.full(50, int(C.Corruption.OCCLUSION)), np.full(50, 2),
                    np.random.default_rng(0))
    side = C.LEVELS[C.Corruption.OCCLUSION][1]
    for i in range(50):
        grey = np.argwhere(occ[i] != x[i])
        patch = occ[i][occ[i] == C.OCCLUSION_GREY]
        assert patch.size >= side * side - (x[i] == C.OCCLUSION_GREY).sum()
        if grey.size:
            assert np.ptp(grey[:, 0]) < side and np.ptp(grey[:, 1]) < side


def test_a_model_takes_only_its_datasets():
    with pytest.raises(InputError, match="fashion-mnist-c"):
        load_data("fmnist-resnet", dataset="rotten-tomatoes")
    with pytest.raises(InputError, match="unknown model"):
        load_data("resnet-50")


@pytest.mark.skipif(not HAVE_FMNIST, reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_c_corrupts_val_and_test_only():
    clean, cor = load_dataset("fashion-mnist"), load_dataset("fashion-mnist-c")
    np.testing.assert_array_equal(clean.train.x, cor.train.x)
    for split in ("val", "test"):
        a, b = clean.split(split), cor.split(split)
        np.testing.assert_array_equal(a.y, b.y)
        same = (a.x == b.x).all(axis=(1, 2)).mean()
        assert C.CLEAN_SHARE - 0.03 < same < C.CLEAN_SHARE + 0.06  # clean, or unchanged by chance
    assert clean.augment is None and cor.augment is not None
    first = cor.augment(cor.train.x[:500], np.random.default_rng(0))
    assert not np.array_equal(first, cor.augment(cor.train.x[:500], np.random.default_rng(1)))
