"""Crop + flip augmentation: the batched on-device version and the torchvision reference.

The mdistiller/RepDistiller CIFAR recipe is ``RandomCrop(32, padding=4)`` (zero padding of the
uint8 image) -> ``RandomHorizontalFlip()`` -> ``ToTensor()`` -> ``Normalize(mean, std)``. For an
image of size H x W and padding p, a crop is fully described by its top-left corner ``(dy, dx)`` in
the padded image, ``0 <= dy, dx <= 2p``, and the flip by one bit: ``(2p + 1)^2 * 2`` variants
(162 for p = 4). :func:`augment` applies given ``(dy, dx, flip)`` to a batch with index arithmetic
(no Python loop over samples) and reproduces the PIL pipeline bit for bit: the normalisation uses
the same float32 operations as ``ToTensor`` (``/ 255``) and ``Normalize`` (``- mean``, ``/ std``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _channel_tensor(values, device, n_channels: int) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32, device=device).reshape(-1)
    if t.numel() != n_channels:
        raise ValueError(f"need {n_channels} per-channel values, got {t.numel()}")
    return t.view(1, n_channels, 1, 1)


def normalize_u8(images_u8: torch.Tensor, mean, std, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``ToTensor`` + ``Normalize`` of a uint8 batch: ``(x / 255 - mean) / std`` in float32, then
    cast to ``dtype``. Keeps the memory format of ``images_u8``."""
    c = images_u8.shape[1]
    m = _channel_tensor(mean, images_u8.device, c)
    s = _channel_tensor(std, images_u8.device, c)
    x = images_u8.to(torch.float32).div_(255).sub_(m).div_(s)
    return x if dtype == torch.float32 else x.to(dtype)


def crop_flip_u8(images_u8: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
                 flip: torch.Tensor | None, *, pad: int, check: bool = True) -> torch.Tensor:
    """Zero-pad each image by ``pad``, crop ``H x W`` at ``(dy, dx)`` of the padded image and
    mirror it left-right where ``flip`` is true. uint8 in, uint8 out (contiguous),
    ``B x C x H x W``. ``check=False`` skips the range check of the
    offsets, which synchronises a GPU (out of range, ``gather`` still fails, on CUDA with a
    device-side assert rather than a clear message)."""
    if images_u8.dim() != 4:
        raise ValueError(f"images must be B x C x H x W, got shape {tuple(images_u8.shape)}")
    b, _, h, w = images_u8.shape
    dev = images_u8.device
    dy = torch.as_tensor(dy, device=dev).long().reshape(b)
    dx = torch.as_tensor(dx, device=dev).long().reshape(b)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if check and b and (int(dy.min()) < 0 or int(dx.min()) < 0 or int(dy.max()) > 2 * pad or int(dx.max()) > 2 * pad):
        raise ValueError(f"crop offsets must lie in [0, {2 * pad}]")
    c = images_u8.shape[1]
    padded = F.pad(images_u8, (pad, pad, pad, pad)) if pad else images_u8   # B x C x H+2p x W+2p
    # two gathers (rows, then columns) rather than one 4-D advanced index: ~4x faster on CPU
    rows = dy[:, None] + torch.arange(h, device=dev)                          # B x H
    out = torch.gather(padded, 2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))
    ar = torch.arange(w, device=dev)
    if flip is None:
        cols = dx[:, None] + ar                                                 # B x W
    else:
        flip = torch.as_tensor(flip, device=dev).bool().reshape(b)
        cols = dx[:, None] + torch.where(flip[:, None], (w - 1) - ar, ar)
    return torch.gather(out, 3, cols[:, None, None, :].expand(b, c, h, w))


def augment(images_u8: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor | None,
            *, pad: int, mean, std, dtype: torch.dtype = torch.float32,
            channels_last: bool = False, check: bool = True) -> torch.Tensor:
    """Batched ``RandomCrop(H, padding=pad)`` -> ``RandomHorizontalFlip`` -> ``ToTensor`` ->
    ``Normalize(mean, std)`` with the random draws given: crop corner ``(dy, dx)`` in ``[0, 2*pad]``
    (row, column) and ``flip`` (bool, or None for no flips), one per image.

    ``images_u8`` is ``B x C x H x W`` uint8 on any device; returns ``dtype`` on that device,
    ``channels_last`` memory format if asked. ``check=False``: see :func:`crop_flip_u8`."""
    if images_u8.dtype != torch.uint8:
        raise TypeError(f"augment expects uint8 images, got {images_u8.dtype}")
    u8 = crop_flip_u8(images_u8, dy, dx, flip, pad=pad, check=check)
    u8 = u8.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return normalize_u8(u8, mean, std, dtype)


def reference_transform(mean: Sequence[float], std: Sequence[float], pad: int = 4, flip: bool = True,
                        train: bool = True, size: int = 32) -> Callable:
    """The torchvision PIL pipeline of the published recipe.

    Train: ``RandomCrop(size, padding=pad)`` (if ``pad``), ``RandomHorizontalFlip()`` (if ``flip``),
    ``ToTensor()``, ``Normalize(mean, std)``. Eval: ``ToTensor()``, ``Normalize(mean, std)``."""
    from torchvision import transforms as T

    steps: list = []
    if train:
        if pad:
            steps.append(T.RandomCrop(size, padding=pad))
        if flip:
            steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(tuple(mean), tuple(std))]
    return T.Compose(steps)


class ReferenceDataset(torch.utils.data.Dataset):
    """``(transform(PIL image), label, index)`` from uint8 ``N x C x H x W`` images, the way
    torchvision's CIFAR dataset (and mdistiller's ``CIFAR100Instance``) serves them."""

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None):
        if images_u8.dtype != torch.uint8 or images_u8.dim() != 4:
            raise ValueError("images must be uint8 N x C x H x W")
        if len(labels) != len(images_u8):
            raise ValueError("images and labels differ in length")
        hwc = images_u8.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()
        self.images = hwc[..., 0] if hwc.shape[-1] == 1 else hwc   # N x H x W (x C), as PIL wants
        self.labels = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        img = Image.fromarray(self.images[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[index]), index
