"""Device-resident data loader with per-sample crop/flip done on the device.

The uint8 images are moved to the device once. Each training epoch draws, from a CPU
``torch.Generator`` seeded with a hash of ``(seed, epoch)``, a permutation of the dataset and, for
every position of that permutation, a crop corner ``(dy, dx)`` uniform over ``0..2*pad`` and a flip
bit with p = 0.5 (all False when flipping is not allowed). The draws are therefore a pure function of
``(seed, epoch)`` (the same on CPU and GPU, whatever ran before): resuming at epoch ``e`` after a
kill replays epoch ``e`` exactly. Call :meth:`DeviceLoader.set_epoch` before iterating, as with
``DistributedSampler``; iterating twice without it replays the same epoch.

Batches hold the normalised images, labels, dataset indices and the draws that produced them (so a
teacher-output cache can be indexed by ``(index, dy, dx, flip)``).

Fixed views (the multi-view teacher cache, :mod:`kdsrc.cache`): with ``fixed_variants`` (an
``N x K x 3`` tensor of ``(dy, dx, flip)`` per image) a training epoch keeps the same permutation
but gives every sample one of its image's K stored views, the slot drawn uniformly from a second
CPU generator seeded by :func:`views_epoch_seed` ``(seed, epoch)``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import torch

from kdsrc.data.arrays import SPLITS, DatasetArrays
from kdsrc.data.augment import augment, crop_flip_u8, normalize_u8
from kdsrc.data.resize import (ResizeSpec, centre_resized, crop_seed, random_resized_boxes,
                               resized_crops)
from kdsrc.errors import ConfigError, unknown_name


@dataclass
class Batch:
    x: torch.Tensor                 # B x C x H x W, normalised, loader dtype, on the device
    y: torch.Tensor                 # int64 labels
    index: torch.Tensor             # int64 dataset indices
    dy: torch.Tensor | None = None  # int64 crop row offsets in [0, 2*pad]; None for eval loaders
    dx: torch.Tensor | None = None  # int64 crop column offsets
    flip: torch.Tensor | None = None  # bool
    #: soft targets of a mixed batch (mixup/cutmix), set by the training loop; None otherwise
    y_soft: torch.Tensor | None = None
    #: int64 stored view of each sample (a teacher cache's augmented views); None otherwise
    view: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])


class EpochDraws(NamedTuple):
    """One epoch's randomness (CPU tensors, length N, by position in the epoch's order)."""
    perm: torch.Tensor   # int64 permutation of range(N)
    dy: torch.Tensor     # int64 in [0, 2*pad]
    dx: torch.Tensor     # int64 in [0, 2*pad]
    flip: torch.Tensor   # bool


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of ``(seed, epoch)``: 63 bits of sha256, so nearby pairs are unrelated."""
    digest = hashlib.sha256(f"kdsrc.DeviceLoader:{int(seed)}:{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def epoch_draws(n: int, *, seed: int, epoch: int, pad: int, flip: bool) -> EpochDraws:
    """Permutation, crop offsets and flips of one training epoch, drawn in that order from a CPU
    generator seeded with :func:`epoch_seed`."""
    g = torch.Generator(device="cpu")
    g.manual_seed(epoch_seed(seed, epoch))
    perm = torch.randperm(n, generator=g, dtype=torch.int64)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g, dtype=torch.int64)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g, dtype=torch.int64)
    if flip:
        fl = torch.rand(n, generator=g) < 0.5
    else:
        fl = torch.zeros(n, dtype=torch.bool)
    return EpochDraws(perm, dy, dx, fl)


def views_epoch_seed(seed: int, epoch: int) -> int:
    """Generator seed of the fixed-view slots of ``(seed, epoch)`` (independent of epoch_seed's)."""
    digest = hashlib.sha256(f"kdsrc.DeviceLoader.views:{int(seed)}:{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def fixed_view_draws(draws: EpochDraws, variants: torch.Tensor, *, seed: int, epoch: int
                     ) -> EpochDraws:
    """``draws`` with each position's crop/flip replaced by one of its image's fixed views."""
    n, k = variants.shape[0], variants.shape[1]
    g = torch.Generator(device="cpu")
    g.manual_seed(views_epoch_seed(seed, epoch))
    slot = torch.randint(0, k, (n,), generator=g, dtype=torch.int64)
    chosen = variants[draws.perm, slot]                      # N x 3, by position in the epoch
    return EpochDraws(draws.perm, chosen[:, 0].clone(), chosen[:, 1].clone(), chosen[:, 2].bool())


def epoch_view(seed: int, epoch: int, k: int) -> int:
    """The stored view a whole epoch trains on (the multi-view project draws one view id per
    epoch), from a generator seeded by ``(seed, epoch)``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(views_epoch_seed(seed, epoch))
    return int(torch.randint(0, k, (1,), generator=g))


class DeviceLoader:
    """Batches of a uint8 image set that lives on ``device``; see the module docstring."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, mean, std,
                 train: bool, pad: int = 4, flip: bool = True, device="cpu", seed: int = 0,
                 drop_last: bool = False, channels_last: bool = False, dtype=torch.float32,
                 fixed_variants: torch.Tensor | None = None, resize: ResizeSpec | None = None,
                 pixel_augment=None):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor N x C x H x W")
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ConfigError(f"pad must be a non-negative integer, got {pad!r}")
        if not torch.empty((), dtype=dtype).is_floating_point():
            raise ConfigError(f"dtype must be a floating point dtype, got {dtype}")
        self.device = torch.device(device)
        self.images = images.to(self.device).contiguous()
        self.labels = labels.to(device=self.device, dtype=torch.int64)
        c = images.shape[1]
        self.mean = tuple(float(v) for v in torch.as_tensor(mean, dtype=torch.float64).reshape(-1))
        self.std = tuple(float(v) for v in torch.as_tensor(std, dtype=torch.float64).reshape(-1))
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"mean and std need {c} values each")
        # device copies, so that a batch does not copy the constants host -> device
        self._mean_t = torch.tensor(self.mean, dtype=torch.float32, device=self.device)
        self._std_t = torch.tensor(self.std, dtype=torch.float32, device=self.device)
        self._zero = torch.zeros(c, dtype=torch.float32, device=self.device)
        self._unit = torch.ones(c, dtype=torch.float32, device=self.device)
        self.batch_size = batch_size
        self.train = bool(train)
        self.pad = pad
        self.flip = bool(flip)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.channels_last = bool(channels_last)
        self.dtype = dtype
        self.epoch = 0
        #: the 224-px path (kdsrc.data.resize): each batch resized on the device; None: as stored
        self.resize = resize
        #: the recipes' augmentations (kdsrc.data.recipe_aug.PixelAugment), training only
        self.pixel_augment = pixel_augment if train else None
        self.fixed_variants: torch.Tensor | None = None
        self.set_fixed_variants(fixed_variants)
        self.view_images: torch.Tensor | None = None

    def set_view_images(self, views: torch.Tensor | None) -> None:
        """Train on stored augmented views (``K x N x C x H x W`` uint8, a teacher cache of the
        autoaugment scheme): each epoch reads one view of every image (:func:`epoch_view`), as
        it is, in a fresh order; None: the stored images with fresh augmentation."""
        if views is None:
            self.view_images = None
            return
        if self.resize is not None or self.pixel_augment is not None:
            raise ConfigError("stored augmented views (a teacher cache of the autoaugment scheme) "
                              "are trained on as they are: no resizing (solver.image_size) and no "
                              "further augmentation (solver.autoaugment, randaugment, ...)")
        if views.dim() != 5 or tuple(views.shape[1:]) != tuple(self.images.shape) \
                or views.dtype != torch.uint8:
            raise ValueError(f"view images must be K x {tuple(self.images.shape)} uint8, got "
                             f"{tuple(views.shape)} {views.dtype}")
        self.view_images = views.to(self.device).contiguous()

    def set_fixed_variants(self, variants: torch.Tensor | None) -> None:
        """Train on K fixed ``(dy, dx, flip)`` views per image (``N x K x 3``), or None: fresh
        crops and flips (see the module docstring)."""
        if variants is None:
            self.fixed_variants = None
            return
        if self.resize is not None:
            raise ConfigError("fixed views (a multi-view teacher cache) are crops of the stored "
                              "images; they cannot be combined with resizing each batch")
        v = torch.as_tensor(variants).to("cpu", torch.int64)
        if v.dim() != 3 or v.shape[0] != self.num_samples or v.shape[1] < 1 or v.shape[2] != 3:
            raise ValueError(f"fixed_variants must be N x K x 3 with N = {self.num_samples}, "
                             f"got {tuple(v.shape)}")
        if (int(v[..., :2].min()) < 0 or int(v[..., :2].max()) > 2 * self.pad
                or int(v[..., 2].min()) < 0 or int(v[..., 2].max()) > int(self.flip)):
            raise ValueError(f"fixed_variants out of range: dy, dx in [0, {2 * self.pad}], "
                             f"flip in [0, {int(self.flip)}]")
        self.fixed_variants = v.contiguous()

    @classmethod
    def from_arrays(cls, arrays: DatasetArrays, split: str, **kw) -> "DeviceLoader":
        """Loader over ``arrays``' ``"train"`` or ``"test"`` split. ``train`` defaults to
        ``split == "train"``; mean, std, pad and flip default to the dataset's."""
        if split not in SPLITS:
            raise unknown_name("split", split, SPLITS)
        images, labels = arrays.split(split)
        kw.setdefault("train", split == "train")
        kw.setdefault("mean", arrays.mean)
        kw.setdefault("std", arrays.std)
        kw.setdefault("pad", arrays.pad)
        kw.setdefault("flip", arrays.flip)
        return cls(images, labels, **kw)

    @property
    def num_samples(self) -> int:
        return int(self.images.shape[0])

    def set_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def draws(self, epoch: int | None = None) -> EpochDraws:
        """The randomness of a training epoch (default: the current one), on the CPU."""
        epoch = self.epoch if epoch is None else epoch
        d = epoch_draws(self.num_samples, seed=self.seed, epoch=epoch, pad=self.pad, flip=self.flip)
        if self.fixed_variants is not None:
            d = fixed_view_draws(d, self.fixed_variants, seed=self.seed, epoch=epoch)
        return d

    def __iter__(self) -> Iterator[Batch]:
        n, b = self.num_samples, self.batch_size
        stop = len(self) * b
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        if not self.train:
            for start in range(0, min(stop, n), b):
                end = min(start + b, n)
                u8 = self.images[start:end].contiguous(memory_format=memory_format)
                x = (normalize_u8(u8, self._mean_t, self._std_t, self.dtype) if self.resize is None
                     else centre_resized(u8, self.resize, self._mean_t, self._std_t, self.dtype
                                         ).contiguous(memory_format=memory_format))
                yield Batch(x=x,
                            y=self.labels[start:end],
                            index=torch.arange(start, end, device=self.device, dtype=torch.int64))
            return
        d = self.draws()
        if self.resize is not None:
            yield from self._resized_batches(d, stop, memory_format)
            return
        if self.view_images is not None:
            v = epoch_view(self.seed, self.epoch, int(self.view_images.shape[0]))
            perm = d.perm.to(self.device)
            for start in range(0, min(stop, n), b):
                idx = perm[start:min(start + b, n)]
                u8 = self.view_images[v, idx].contiguous(memory_format=memory_format)
                yield Batch(x=normalize_u8(u8, self._mean_t, self._std_t, self.dtype),
                            y=self.labels[idx], index=idx,
                            view=torch.full_like(idx, v))
            return
        perm, dy, dx, fl = (t.to(self.device) for t in d)
        aug = self.pixel_augment
        for start in range(0, min(stop, n), b):
            end = min(start + b, n)
            idx = perm[start:end]
            if aug is None:
                x = augment(self.images[idx], dy[start:end], dx[start:end], fl[start:end],
                            pad=self.pad, mean=self._mean_t, std=self._std_t, dtype=self.dtype,
                            channels_last=self.channels_last, check=False)
            else:
                u8 = crop_flip_u8(self.images[idx], dy[start:end], dx[start:end], fl[start:end],
                                  pad=self.pad, check=False)
                u8 = aug.pixels(u8) if aug.on_pixels else u8
                x = aug.erase(normalize_u8(u8.contiguous(memory_format=memory_format),
                                           self._mean_t, self._std_t, self.dtype))
            yield Batch(x=x, y=self.labels[idx], index=idx,
                        dy=dy[start:end], dx=dx[start:end], flip=fl[start:end])

    def _resized_batches(self, d: EpochDraws, stop: int, memory_format) -> Iterator[Batch]:
        """Training batches of the 224-px path: the epoch's permutation and flips, a random
        resized crop per sample (its own generator, seeded by ``(seed, epoch)``). No crop
        corner: ``dy``/``dx`` are None, so no teacher cache is read."""
        n, b, spec = self.num_samples, self.batch_size, self.resize
        g = torch.Generator().manual_seed(crop_seed(self.seed, self.epoch))
        boxes = random_resized_boxes(n, self.images.shape[2], self.images.shape[3], g,
                                     scale=spec.scale, ratio=spec.ratio).to(self.device)
        perm, fl = d.perm.to(self.device), d.flip.to(self.device)
        for start in range(0, min(stop, n), b):
            end = min(start + b, n)
            idx = perm[start:end]
            aug = self.pixel_augment
            if aug is None:
                x = resized_crops(self.images[idx], boxes[start:end], fl[start:end], spec.size,
                                  self._mean_t, self._std_t, self.dtype)
            else:   # augment the resized uint8 image, as timm's PIL pipeline does
                raw = resized_crops(self.images[idx], boxes[start:end], fl[start:end], spec.size,
                                    self._zero, self._unit)
                u8 = (raw * 255.0).round_().clamp_(0, 255).to(torch.uint8)
                u8 = aug.pixels(u8) if aug.on_pixels else u8
                x = aug.erase(normalize_u8(u8, self._mean_t, self._std_t, self.dtype))
            yield Batch(x=x.contiguous(memory_format=memory_format), y=self.labels[idx],
                        index=idx, flip=fl[start:end])

    def __repr__(self) -> str:
        return (f"DeviceLoader(n={self.num_samples}, batch_size={self.batch_size}, train={self.train}, "
                f"pad={self.pad}, flip={self.flip}, device={self.device}, seed={self.seed}, "
                f"epoch={self.epoch}, drop_last={self.drop_last}, dtype={self.dtype})")
