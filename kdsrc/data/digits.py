"""The embedded real dataset: scikit-learn's handwritten digits, shaped like CIFAR.

``sklearn.datasets.load_digits()`` ships inside the scikit-learn wheel (1,797 images, 8 x 8,
grey levels 0..16, 10 classes), so the quick plan and the tests need no network.

Conversion (every step exact integer arithmetic, so the result does not depend on the torch,
numpy or CPU in use):

1. Upsample 8 x 8 -> 32 x 32 by bilinear interpolation with ``align_corners=False`` semantics
   (the same sampling positions and edge clamping as ``F.interpolate(mode="bilinear")``; for an
   integer upscale antialiasing changes nothing). Factor 4 puts every output pixel at a source
   offset of +-1/8 or +-3/8, so the weights are multiples of 1/8 per axis, 1/64 in 2-D.
2. Map grey levels 0..16 to 0..255 in the same step: ``u8 = floor((acc * 255 + 512) / 1024)`` where
   ``acc`` is the interpolated value in 1/64 units (round half up, one rounding only).
3. Replicate the grey channel to 3 channels.

Split (fixed, stratified 80/20; ``DIGITS_SPLIT`` documents it): for each class, its sample indices
(positions in ``load_digits()`` order) are sorted by ``sha256(f"{DIGITS_SPLIT_SEED}:{index}")``;
the first ``round_half_up(0.2 * n_class)`` of them form the test split, the rest the training split.
Both splits keep the original ``load_digits()`` order. This gives 1,438 train / 359 test images.
A hash, not an RNG, decides the split, so it cannot change with numpy, torch or scikit-learn.

Normalisation: mean and (population) std per channel over all training pixels, in [0, 1] units,
computed exactly from integer sums. ``flip`` is False (a mirrored digit is another digit or none),
``pad`` is 4 as for CIFAR.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import math
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from kdsrc.data.arrays import DatasetArrays
from kdsrc.errors import DataError

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_PERCENT = 20
DIGITS_SPLIT = (
    "stratified 80/20: per class, indices of load_digits() sorted by "
    f"sha256('{DIGITS_SPLIT_SEED}:<index>'); first round_half_up(0.2*n_class) -> test; "
    "both splits in load_digits() order (1438 train / 359 test)"
)
DIGITS_SIZE = 32
DIGITS_PAD = 4


def _upsample_matrix(n_in: int = 8, factor: int = 4) -> np.ndarray:
    """``(n_in*factor) x n_in`` integer weights (units of 1/(2*factor)) of 1-D bilinear upsampling
    with align_corners=False: output ``i`` samples source ``(i + 0.5) / factor - 0.5``, clamped."""
    denom = 2 * factor
    m = np.zeros((n_in * factor, n_in), dtype=np.int64)
    for i in range(n_in * factor):
        # source coordinate in units of 1/denom: ((2i + 1) - factor) / (2 factor)
        num = 2 * i + 1 - factor
        if num <= 0:
            m[i, 0] += denom
            continue
        lo, frac = divmod(num, denom)
        hi = min(lo + 1, n_in - 1)
        m[i, lo] += denom - frac
        m[i, hi] += frac
    assert (m.sum(axis=1) == denom).all()
    return m


def upsample_digits(images16: np.ndarray) -> np.ndarray:
    """``N x 8 x 8`` integer grey levels 0..16 -> ``N x 32 x 32`` uint8 0..255 (exact, see module doc)."""
    img = np.asarray(images16, dtype=np.int64)
    if img.ndim != 3 or img.shape[1:] != (8, 8) or img.min() < 0 or img.max() > 16:
        raise DataError(f"digits: expected N x 8 x 8 grey levels 0..16, got {img.shape}")
    w = _upsample_matrix(8, DIGITS_SIZE // 8)            # 32 x 8, units 1/8
    acc = np.einsum("ik,nkl,jl->nij", w, img, w)          # units 1/64, 0..1024
    return ((acc * 255 + 512) // 1024).astype(np.uint8)


def _split_order_key(index: int) -> bytes:
    return hashlib.sha256(f"{DIGITS_SPLIT_SEED}:{index}".encode()).digest()


def digits_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split: ``(train_indices, test_indices)``, each ascending."""
    labels = np.asarray(labels)
    test: list[int] = []
    for c in np.unique(labels):
        idx = sorted(np.flatnonzero(labels == c).tolist(), key=_split_order_key)
        n_test = (len(idx) * DIGITS_TEST_PERCENT + 50) // 100
        test.extend(idx[:n_test])
    test_idx = np.array(sorted(test), dtype=np.int64)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False
    return np.flatnonzero(train_mask).astype(np.int64), test_idx


def exact_mean_std(images_u8: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of ``N x C x H x W`` uint8 images in [0, 1] units,
    from exact integer sums (independent of summation order)."""
    x = np.asarray(images_u8, dtype=np.int64)
    means, stds = [], []
    for c in range(x.shape[1]):
        ch = x[:, c]
        n = ch.size
        s = int(ch.sum())
        q = int((ch * ch).sum())
        mean = Fraction(s, 255 * n)
        var = Fraction(n * q - s * s, (255 * n) ** 2)
        means.append(float(mean))
        stds.append(math.sqrt(float(var)))
    return tuple(means), tuple(stds)


def _read_digits_csv() -> tuple[np.ndarray, np.ndarray] | None:
    """``(images 0..16 as N x 8 x 8 float, labels)`` read straight from the wheel's
    ``sklearn/datasets/data/digits.csv.gz``, the file ``load_digits()`` parses, or None when it is
    not there. Importing scikit-learn (and SciPy with it) costs ~1.5 s per process, paid by every
    pipeline job; ``find_spec`` locates the package without importing it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as fh:
                data = np.loadtxt(fh, delimiter=",")
            if data.ndim != 2 or data.shape[1] != 65:
                return None
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    return None


def _load_digits_sklearn() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - sklearn is a hard dependency
        raise DataError("the 'digits' dataset needs scikit-learn (pip install scikit-learn)") from e
    bunch = load_digits()
    return bunch.images, bunch.target


@lru_cache(maxsize=1)
def _digits_numpy():
    raw = _read_digits_csv() or _load_digits_sklearn()
    images16 = np.rint(raw[0]).astype(np.int64)             # N x 8 x 8, 0..16
    labels = np.rint(raw[1]).astype(np.int64)
    img = upsample_digits(images16)                          # N x 32 x 32 uint8
    img = np.ascontiguousarray(np.repeat(img[:, None], 3, axis=1))
    train_idx, test_idx = digits_split(labels)
    mean, std = exact_mean_std(img[train_idx])
    for a in (img, labels, train_idx, test_idx):
        a.setflags(write=False)
    return img, labels, train_idx, test_idx, mean, std


def load_digits_arrays() -> DatasetArrays:
    """The embedded ``digits`` dataset as :class:`DatasetArrays` (fresh tensors on each call)."""
    img, labels, train_idx, test_idx, mean, std = _digits_numpy()
    return DatasetArrays(
        name="digits",
        train_x=torch.from_numpy(img[train_idx].copy()),
        train_y=torch.from_numpy(labels[train_idx].copy()),
        test_x=torch.from_numpy(img[test_idx].copy()),
        test_y=torch.from_numpy(labels[test_idx].copy()),
        num_classes=10,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        pad=DIGITS_PAD,
        flip=False,
        class_names=tuple(str(i) for i in range(10)),
        source="sklearn.datasets.load_digits (embedded); " + DIGITS_SPLIT,
    )
