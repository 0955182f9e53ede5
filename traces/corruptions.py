"""Fashion-MNIST-C: Fashion-MNIST with a fixed, documented mix of corruptions.

In the manner of CIFAR-10-C (Hendrycks & Dietterich, ICLR'19), each val and test image is either
left clean (a fixed share) or given one corruption at one severity (1 = mild ... 5 = severe):

===============  ==============================================  ===========================
kind             what                                            severity 1 ... 5
===============  ==============================================  ===========================
gaussian_noise   add N(0, s²) per pixel (pixels in [0, 1])        s = 0.08 0.12 0.18 0.26 0.38
blur             Gaussian blur of standard deviation s pixels     s = 0.6 1.0 1.5 2.0 2.5
contrast         pull every pixel to the image's mean by factor c c = 0.4 0.3 0.2 0.12 0.07
occlusion        a mid-grey square of side s pixels, placed at    s = 6 9 12 15 18
                 random wholly inside the image
===============  ==============================================  ===========================

Which image gets what is drawn once per split from a fixed seed (:data:`SPLIT_SEEDS`):
:data:`CLEAN_SHARE` of the images stay clean, the rest are spread evenly over the 4 kinds × 5
severities. The training split stays clean on disk; training draws a fresh corruption per image
and epoch from the same mix (:func:`augment`), so the network learns the corruptions but never
sees a val or test image. The results are uint8 images like the clean dataset's.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from scipy.ndimage import gaussian_filter

CLEAN_SHARE = 0.2
SPLIT_SEEDS = {"val": 1001, "test": 1002}
SEVERITIES = (1, 2, 3, 4, 5)
OCCLUSION_GREY = 128


class Corruption(IntEnum):
    """A corruption kind; ``CLEAN`` marks an image left as it is."""

    CLEAN = -1
    GAUSSIAN_NOISE = 0
    BLUR = 1
    CONTRAST = 2
    OCCLUSION = 3


KINDS = tuple(c for c in Corruption if c is not Corruption.CLEAN)
LEVELS = {
    Corruption.GAUSSIAN_NOISE: (0.08, 0.12, 0.18, 0.26, 0.38),
    Corruption.BLUR: (0.6, 1.0, 1.5, 2.0, 2.5),
    Corruption.CONTRAST: (0.4, 0.3, 0.2, 0.12, 0.07),
    Corruption.OCCLUSION: (6, 9, 12, 15, 18),
}


def assign(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per image: its corruption kind (``Corruption`` values, -1 = clean) and severity (0 = clean)."""
    clean = rng.random(n) < CLEAN_SHARE
    kinds = rng.integers(0, len(KINDS), n)
    severities = rng.integers(1, len(SEVERITIES) + 1, n)
    return np.where(clean, int(Corruption.CLEAN), kinds), np.where(clean, 0, severities)


def _apply(x: np.ndarray, kind: Corruption, level: float, rng: np.random.Generator) -> np.ndarray:
    """One corruption at one level on float images (m, 28, 28) in [0, 1]."""
    if kind is Corruption.GAUSSIAN_NOISE:
        return x + rng.normal(0.0, level, x.shape)
    if kind is Corruption.BLUR:
        return gaussian_filter(x, sigma=(0.0, level, level), mode="constant")
    if kind is Corruption.CONTRAST:
        mean = x.mean(axis=(1, 2), keepdims=True)
        return (x - mean) * level + mean
    side = int(level)
    out = x.copy()
    h, w = x.shape[1:]
    top = rng.integers(0, h - side + 1, len(x))
    left = rng.integers(0, w - side + 1, len(x))
    for i in range(len(x)):
        out[i, top[i]:top[i] + side, left[i]:left[i] + side] = OCCLUSION_GREY / 255.0
    return out


def corrupt(images: np.ndarray, kinds: np.ndarray, severities: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """``images`` (N, 28, 28) uint8 with each image's corruption applied; uint8 again."""
    x = images.astype(np.float64) / 255.0
    out = x.copy()
    for kind in KINDS:
        for sev in SEVERITIES:
            rows = np.flatnonzero((kinds == int(kind)) & (severities == sev))
            if rows.size:
                out[rows] = _apply(x[rows], kind, LEVELS[kind][sev - 1], rng)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def corrupt_split(images: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A val or test split's corrupted images, kinds and severities (fixed by the split's seed)."""
    rng = np.random.default_rng(SPLIT_SEEDS[split])
    kinds, severities = assign(len(images), rng)
    return corrupt(images, kinds, severities, rng), kinds, severities


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Training images with a fresh draw from the mix (one per image; call once per epoch)."""
    kinds, severities = assign(len(images), rng)
    return corrupt(images, kinds, severities, rng)


def describe() -> dict:
    """The mix as recorded in a trace's meta (``corruptions``)."""
    return {"clean_share": CLEAN_SHARE, "split_seeds": dict(SPLIT_SEEDS),
            "levels": {k.name.lower(): list(v) for k, v in LEVELS.items()},
            "occlusion_fill": OCCLUSION_GREY,
            "assignment": "clean with probability clean_share, else kind and severity uniform"}
