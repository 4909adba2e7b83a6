"""The embedded digits dataset: shape, split, determinism, normalisation."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdsrc.data import DATASET_NAMES, DatasetArrays, load_dataset
import kdsrc.data.digits as digits_mod
from kdsrc.data.digits import DIGITS_SPLIT, digits_split, upsample_digits

# sha256 over train_x, train_y, test_x, test_y bytes: pins the conversion and the split.
# If it changes, the dataset changed (scikit-learn's digits.csv.gz or this module): results on
# 'digits' are then not comparable with older ones.
GOLDEN_SHA256 = "eb4ed1eaee704bbc4c5f346d061861c23ae520213fc3537a3a11d472b02992e2"
# first test indices (positions in load_digits() order) of the fixed split
FIRST_TEST_INDICES = [7, 15, 18, 20, 25, 36, 44, 46, 57, 61, 63, 69, 74, 76, 85, 87, 99, 101, 107, 112]

HASH_SNIPPET = (
    "import hashlib; from kdsrc.data import load_dataset; a = load_dataset('digits'); m = hashlib.sha256()\n"
    "for t in (a.train_x, a.train_y, a.test_x, a.test_y): m.update(t.numpy().tobytes())\n"
    "print(m.hexdigest())\n"
    "import sys; print('sklearn' in sys.modules)"
)


def _sha(a: DatasetArrays) -> str:
    m = hashlib.sha256()
    for t in (a.train_x, a.train_y, a.test_x, a.test_y):
        m.update(t.numpy().tobytes())
    return m.hexdigest()


@pytest.fixture(scope="module")
def digits() -> DatasetArrays:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def sk():
    from sklearn.datasets import load_digits
    return load_digits()


def test_shapes_types_and_settings(digits):
    assert "digits" in DATASET_NAMES
    assert digits.name == "digits" and digits.num_classes == 10
    assert digits.train_x.shape == (1438, 3, 32, 32) and digits.test_x.shape == (359, 3, 32, 32)
    assert digits.num_train == 1438 and digits.num_test == 359 and digits.image_shape == (3, 32, 32)
    for x in (digits.train_x, digits.test_x):
        assert x.dtype == torch.uint8 and x.is_contiguous() and x.device.type == "cpu"
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey, 3 channels
    assert digits.train_y.dtype == torch.int64 and digits.test_y.dtype == torch.int64
    assert int(digits.train_x.max()) == 255 and int(digits.train_x.min()) == 0
    assert digits.flip is False and digits.pad == 4
    assert digits.class_names == tuple(str(i) for i in range(10))


def test_split_is_stratified_disjoint_and_fixed(digits, sk):
    train_idx, test_idx = digits_split(sk.target)
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    assert np.array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(1797))
    assert test_idx[:20].tolist() == FIRST_TEST_INDICES
    n_class = np.bincount(sk.target, minlength=10)
    n_test = np.bincount(sk.target[test_idx], minlength=10)
    assert np.array_equal(n_test, (n_class * 20 + 50) // 100)          # round half up of 20 %
    assert torch.equal(torch.bincount(digits.test_y, minlength=10), torch.from_numpy(n_test))
    assert torch.equal(digits.train_y, torch.from_numpy(sk.target[train_idx]))
    assert torch.equal(digits.test_y, torch.from_numpy(sk.target[test_idx]))
    assert "1438 train / 359 test" in DIGITS_SPLIT


def test_images_are_the_upsampled_sklearn_digits(digits, sk):
    """Exact integer bilinear (align_corners=False) == torch's bilinear up to rounding."""
    up = upsample_digits(np.rint(sk.images).astype(np.int64))
    train_idx, test_idx = digits_split(sk.target)
    assert torch.equal(digits.train_x[:, 0], torch.from_numpy(up[train_idx]))
    assert torch.equal(digits.test_x[:, 0], torch.from_numpy(up[test_idx]))
    ref = F.interpolate(torch.tensor(sk.images, dtype=torch.float64)[:, None] * 255 / 16, size=(32, 32),
                        mode="bilinear", align_corners=False, antialias=True)[:, 0]
    assert float((ref - torch.from_numpy(up).double()).abs().max()) <= 0.5 + 1e-9
    # 8x8 block means come back (the 4x4 blocks of the upsampled image follow the source pixels)
    assert np.corrcoef(up.reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4)).ravel(), sk.images.ravel())[0, 1] > 0.95


def test_mean_std_from_the_training_split(digits):
    x = digits.train_x.double() / 255
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(torch.tensor(digits.mean, dtype=torch.float64), mean, atol=1e-12, rtol=0)
    assert torch.allclose(torch.tensor(digits.std, dtype=torch.float64), std, atol=1e-12, rtol=0)
    all_x = torch.cat([digits.train_x, digits.test_x]).double() / 255
    assert abs(float(all_x.mean()) - digits.mean[0]) > 1e-6  # really train only, not train+test


def test_deterministic_within_a_process(digits):
    again = load_dataset("digits", root="/nonexistent", download=True)  # embedded: root ignored
    assert again.train_x is not digits.train_x                            # fresh tensors
    assert _sha(again) == _sha(digits) == GOLDEN_SHA256


@pytest.mark.slow
def test_deterministic_across_processes():
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", HASH_SNIPPET], capture_output=True, text=True,
                         check=True, env=env, cwd=repo)
    digest, sklearn_imported = out.stdout.split()
    assert digest == GOLDEN_SHA256
    # the wheel's CSV is read directly: no job pays scikit-learn's (and SciPy's) import time
    assert sklearn_imported == "False"


def test_direct_csv_read_equals_load_digits(sk):
    images, target = digits_mod._read_digits_csv()
    assert np.array_equal(images, sk.images) and np.array_equal(target, sk.target)


def test_falls_back_to_load_digits_without_the_csv(monkeypatch, digits):
    monkeypatch.setattr(digits_mod, "_read_digits_csv", lambda: None)
    digits_mod._digits_numpy.cache_clear()
    try:
        assert _sha(load_dataset("digits")) == GOLDEN_SHA256
    finally:
        digits_mod._digits_numpy.cache_clear()


def test_arrays_are_frozen(digits):
    with pytest.raises(AttributeError):
        digits.pad = 0  # type: ignore[misc]


def test_head_copies_the_first_images():
    d = load_dataset("digits")
    small = d.head(10, 4)
    assert (small.num_train, small.num_test) == (10, 4)
    assert torch.equal(small.train_x, d.train_x[:10]) and torch.equal(small.test_y, d.test_y[:4])
    assert small.train_x.data_ptr() != d.train_x.data_ptr()
    assert (small.mean, small.std, small.pad, small.flip) == (d.mean, d.std, d.pad, d.flip)
    assert d.head(10).test_x is d.test_x   # test split kept as it is
