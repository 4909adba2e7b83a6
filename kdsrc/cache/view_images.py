"""The multi-view project's augmented views, made once: K copies of the training set, each image
randomly cropped (zero padding ``pad``), flipped and put through torchvision's AutoAugment
(CIFAR-10 policy), kept as uint8 images (a teacher cache of scheme ``autoaugment-K`` stores
them with the teacher's logits on them, :mod:`kdsrc.cache.store`).

The reference (anguskk109/VIT-DISTILL, ``precompute_augmented_data.py``) seeds view ``k`` with
``666 + k`` and stores float32 normalised tensors (614 MB per CIFAR-10 view); here view ``k`` has
its own seed too (:func:`view_seed`), so view ``k`` is the same image set whatever K is (the
K = 1 cache's view is the K = 5 cache's view 0), and the views stay uint8 (154 MB per view,
768 MB for K = 5), normalised when a batch is read. The draws are torch's, not the reference's
PIL pipeline's: the same distribution, other samples.
"""

from __future__ import annotations

import hashlib

import torch

from ..data.arrays import DatasetArrays
from ..data.augment import crop_flip_u8
from ..data.recipe_aug import autoaugment_cifar10

#: what each view is (recorded in the cache's meta.json)
AUGMENT = "random crop (zero padding) + horizontal flip + AutoAugment (CIFAR-10 policy)"
_CHUNK = 4096


def view_seed(k: int) -> int:
    """The seed of view ``k`` (63 bits of a sha256)."""
    digest = hashlib.sha256(f"kdsrc.cache.view_images:{int(k)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def draw_view(data: DatasetArrays, k: int) -> torch.Tensor:
    """View ``k`` of the training set: ``N x C x H x W`` uint8 on the CPU. Uses torch's global
    generator inside a fork (AutoAugment draws from it), leaving the caller's state as it was."""
    x = data.train_x
    n = int(x.shape[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(view_seed(k))
        dy = torch.randint(0, 2 * data.pad + 1, (n,))
        dx = torch.randint(0, 2 * data.pad + 1, (n,))
        flip = torch.rand(n) < 0.5 if data.flip else torch.zeros(n, dtype=torch.bool)
        out = torch.empty_like(x)
        for s in range(0, n, _CHUNK):
            e = min(n, s + _CHUNK)
            out[s:e] = autoaugment_cifar10(crop_flip_u8(x[s:e], dy[s:e], dx[s:e], flip[s:e],
                                                        pad=data.pad))
    return out


def draw_views(data: DatasetArrays, k_views: int, progress=None) -> torch.Tensor:
    """Views ``0..K-1``: ``K x N x C x H x W`` uint8 on the CPU."""
    views = torch.empty((k_views, *data.train_x.shape), dtype=torch.uint8)
    for k in range(k_views):
        views[k] = draw_view(data, k)
        if progress is not None:
            progress.line(f"augmented views: {k + 1}/{k_views} made ({AUGMENT})")
    return views
