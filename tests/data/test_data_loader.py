"""DeviceLoader: draws, coverage, determinism (resume), eval order, length."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binomtest, chi2

from kdsrc.data import DeviceLoader, augment, load_dataset, normalize_u8
from kdsrc.data.loader import epoch_draws
from kdsrc.errors import ConfigError, UnknownNameError

MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)


def _data(n=200, hw=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, hw, hw), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def _loader(x, y, **kw):
    kw.setdefault("batch_size", 32)
    kw.setdefault("train", True)
    return DeviceLoader(x, y, mean=MEAN, std=STD, **kw)


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def _cat(batches, field):
    return torch.cat([getattr(b, field) for b in batches])


def test_crop_offsets_uniform_and_flips_half():
    x, y = _data(n=2000, hw=4)
    loader = _loader(x, y, batch_size=500, seed=7)
    dys, dxs, flips = [], [], []
    for epoch in range(10):
        batches = _epoch(loader, epoch)
        dys.append(_cat(batches, "dy")); dxs.append(_cat(batches, "dx")); flips.append(_cat(batches, "flip"))
    dy, dx, flip = torch.cat(dys), torch.cat(dxs), torch.cat(flips)
    n = len(dy)
    assert dy.dtype == torch.int64 and flip.dtype == torch.bool
    assert int(dy.min()) == 0 and int(dy.max()) == 8 and int(dx.min()) == 0 and int(dx.max()) == 8
    counts = torch.bincount(dy * 9 + dx, minlength=81).double()
    assert counts.numel() == 81 and bool((counts > 0).all())
    expected = n / 81
    stat = float(((counts - expected) ** 2 / expected).sum())
    p = chi2.sf(stat, df=80)
    assert p > 1e-3, f"crop offsets not uniform: chi2={stat:.1f}, p={p:.2g}"
    # flips: binomial test at the same level, and independent of the offsets (2 x 81 table)
    k = int(flip.sum())
    assert binomtest(k, n, 0.5).pvalue > 1e-3, f"{k}/{n} flips"
    table = torch.stack([torch.bincount((dy * 9 + dx)[flip], minlength=81),
                         torch.bincount((dy * 9 + dx)[~flip], minlength=81)]).double()
    exp = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    assert chi2.sf(float(((table - exp) ** 2 / exp).sum()), df=80) > 1e-3


def test_no_flips_when_not_allowed():
    x, y = _data()
    loader = _loader(x, y, flip=False)
    for epoch in range(3):
        for b in _epoch(loader, epoch):
            assert not bool(b.flip.any())
            ref = augment(x[b.index], b.dy, b.dx, None, pad=4, mean=MEAN, std=STD)
            assert torch.equal(b.x, ref)


def test_every_index_once_per_epoch_and_batches_consistent():
    x, y = _data(n=203)
    loader = _loader(x, y, batch_size=32)
    for epoch in range(3):
        batches = _epoch(loader, epoch)
        assert len(batches) == len(loader) == 7
        assert [len(b) for b in batches] == [32] * 6 + [11]
        index = _cat(batches, "index")
        assert index.dtype == torch.int64
        assert torch.equal(index.sort().values, torch.arange(203))
        for b in batches:
            assert b.x.shape == (len(b), 3, 8, 8) and b.x.dtype == torch.float32
            assert torch.equal(b.y, y[b.index])
            assert torch.equal(b.x, augment(x[b.index], b.dy, b.dx, b.flip, pad=4, mean=MEAN, std=STD))


def test_same_seed_and_epoch_give_identical_batches_regardless_of_history():
    x, y = _data()
    a = _loader(x, y, seed=3)
    history = [_epoch(a, e) for e in range(4)]          # a ran epochs 0..3
    b = _loader(x, y, seed=3)
    resumed = _epoch(b, 2)                                # b "resumes" at epoch 2
    again = _epoch(a, 2)
    for ref in (history[2], again):
        assert len(ref) == len(resumed)
        for p, q in zip(ref, resumed):
            for field in ("x", "y", "index", "dy", "dx", "flip"):
                assert torch.equal(getattr(p, field), getattr(q, field)), field
    # iterating twice without set_epoch replays the same epoch
    assert torch.equal(_cat(list(a), "index"), _cat(list(a), "index"))


def test_different_epochs_and_seeds_differ():
    x, y = _data()
    a = _loader(x, y, seed=0)
    perms = [_cat(_epoch(a, e), "index") for e in range(5)]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not torch.equal(perms[i], perms[j])
    other = _cat(_epoch(_loader(x, y, seed=1), 0), "index")
    assert not torch.equal(other, perms[0])
    d0, d1 = epoch_draws(200, seed=0, epoch=0, pad=4, flip=True), epoch_draws(200, seed=0, epoch=1, pad=4, flip=True)
    assert not torch.equal(d0.dy, d1.dy) and not torch.equal(d0.flip, d1.flip)


def test_eval_loader_is_ordered_and_unaugmented():
    x, y = _data(n=70)
    loader = _loader(x, y, train=False, batch_size=32)
    for epoch in (0, 5):
        batches = _epoch(loader, epoch)
        assert [len(b) for b in batches] == [32, 32, 6]
        assert torch.equal(_cat(batches, "index"), torch.arange(70))
        assert torch.equal(_cat(batches, "y"), y)
        assert torch.equal(_cat(batches, "x"), normalize_u8(x, MEAN, STD))
        assert all(b.dy is None and b.dx is None and b.flip is None for b in batches)


@pytest.mark.parametrize("train", [True, False])
def test_len_with_and_without_drop_last(train):
    x, y = _data(n=100)
    for bs, drop_last, n_batches in [(32, False, 4), (32, True, 3), (25, False, 4), (25, True, 4),
                                     (100, True, 1), (128, False, 1), (128, True, 0), (1, False, 100)]:
        loader = _loader(x, y, batch_size=bs, drop_last=drop_last, train=train)
        batches = list(loader)
        assert len(loader) == n_batches == len(batches) == (100 // bs if drop_last else math.ceil(100 / bs))
        if drop_last:
            assert all(len(b) == bs for b in batches)
        else:
            assert sum(len(b) for b in batches) == 100


def test_options_channels_last_dtype_and_validation():
    x, y = _data(n=40)
    b = next(iter(_loader(x, y, channels_last=True, dtype=torch.bfloat16)))
    assert b.x.dtype == torch.bfloat16 and b.x.is_contiguous(memory_format=torch.channels_last)
    ref = next(iter(_loader(x, y)))
    assert torch.equal(b.x, ref.x.to(torch.bfloat16))
    e = next(iter(_loader(x, y, train=False, channels_last=True)))
    assert e.x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ConfigError):
        _loader(x, y, batch_size=0)
    with pytest.raises(ConfigError):
        _loader(x, y, dtype=torch.int64)
    with pytest.raises(ValueError):
        _loader(x.float(), y)
    with pytest.raises(ValueError):
        _loader(x, y[:-1])
    with pytest.raises(ValueError):
        _loader(x, y).set_epoch(-1)


def test_from_arrays_uses_dataset_settings():
    arrays = load_dataset("digits")
    train = DeviceLoader.from_arrays(arrays, "train", batch_size=256, seed=1)
    assert train.train and train.flip is False and train.pad == 4
    assert train.mean == arrays.mean and train.num_samples == arrays.num_train
    assert not any(bool(b.flip.any()) for b in train)
    test = DeviceLoader.from_arrays(arrays, "test", batch_size=256)
    assert not test.train and len(test) == math.ceil(arrays.num_test / 256)
    assert torch.equal(_cat(list(test), "y"), arrays.test_y)
    with pytest.raises(UnknownNameError):
        DeviceLoader.from_arrays(arrays, "val", batch_size=8)


def test_images_are_moved_once_and_not_modified():
    x, y = _data(n=50)
    before = x.clone()
    loader = _loader(x, y)
    ptr = loader.images.data_ptr()
    for epoch in range(2):
        _epoch(loader, epoch)
    assert loader.images.data_ptr() == ptr and torch.equal(x, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, y = _data(n=300, hw=32)
    cpu = _epoch(_loader(x, y, seed=5), 3)
    gpu_loader = _loader(x, y, seed=5, device="cuda")
    assert gpu_loader.images.is_cuda
    gpu = _epoch(gpu_loader, 3)
    for p, q in zip(cpu, gpu):
        assert q.x.is_cuda and q.index.is_cuda
        for field in ("y", "index", "dy", "dx", "flip"):
            assert torch.equal(getattr(p, field), getattr(q, field).cpu())
        assert torch.allclose(p.x, q.x.cpu(), atol=1e-6, rtol=0)
