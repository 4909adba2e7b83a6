"""The official code's data path: a torchvision ``DataLoader`` over PIL images, worker processes,
``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip`` + ``ToTensor`` + ``Normalize`` per sample.

The benchmark's reference loop reads its batches here. With ``replay`` set to a
:class:`~kdsrc.data.loader.DeviceLoader`, every epoch serves exactly that loader's batches (same
order, same crop corner and flip per sample) through the PIL operations instead of drawing its
own: the parity test uses this to compare the fast data path with the reference one step by step.
Batches are :class:`~kdsrc.data.loader.Batch` objects without augmentation fields, so a
distiller always runs its teacher on them (a teacher cache needs ``dy``/``dx``/``flip``).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from .arrays import DatasetArrays
from .augment import ReferenceDataset, reference_transform
from .loader import Batch, DeviceLoader, EpochDraws


class ReplayDataset(ReferenceDataset):
    """``(image, label, index)`` with the crop corner and flip of each index taken from an
    epoch's draws (:meth:`set_draws`), applied with torchvision's PIL functional ops: zero
    padding by ``pad``, crop at ``(dy, dx)`` of the padded image, mirror, then ``ToTensor`` +
    ``Normalize`` (what ``RandomCrop``/``RandomHorizontalFlip`` do with the same draws)."""

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, *, mean, std, pad: int):
        from torchvision import transforms as T

        super().__init__(images_u8, labels, transform=None)
        self.pad = int(pad)
        self.size = (int(images_u8.shape[-2]), int(images_u8.shape[-1]))
        self.to_tensor = T.Compose([T.ToTensor(), T.Normalize(tuple(mean), tuple(std))])
        self._dy = self._dx = self._flip = None

    def set_draws(self, draws: EpochDraws) -> None:
        n = len(self)
        perm = draws.perm.numpy()
        if perm.shape != (n,):
            raise ValueError(f"draws cover {perm.shape[0]} samples, the dataset has {n}")
        self._dy, self._dx, self._flip = (np.empty(n, dtype=np.int64) for _ in range(3))
        self._dy[perm] = draws.dy.numpy()           # draws are by position in the epoch's order
        self._dx[perm] = draws.dx.numpy()
        self._flip[perm] = draws.flip.numpy()

    def __getitem__(self, index: int):
        from PIL import Image
        from torchvision.transforms import functional as TF

        if self._dy is None:
            raise RuntimeError("ReplayDataset: call set_draws() before reading")
        img = Image.fromarray(self.images[index])
        if self.pad:
            img = TF.pad(img, self.pad, fill=0)
        img = TF.crop(img, int(self._dy[index]), int(self._dx[index]), *self.size)
        if self._flip[index]:
            img = TF.hflip(img)
        return self.to_tensor(img), int(self.labels[index]), index


class ReferenceLoader:
    """Training batches the way mdistiller/RepDistiller make them: a ``DataLoader`` with
    ``workers`` processes, shuffling, PIL transforms, host tensors copied to ``device``.

    Without ``replay`` the shuffling and the augmentation are drawn by torch/torchvision's own
    RNGs (seeded from ``seed`` and the epoch, as reproducible as the official code); with it,
    each epoch replays ``replay``'s batches for the same epoch."""

    def __init__(self, arrays: DatasetArrays, *, batch_size: int = 64, workers: int = 2,
                 device: str | torch.device = "cpu", seed: int = 0,
                 replay: DeviceLoader | None = None):
        self.batch_size = int(batch_size)
        self.workers = int(workers)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.replay = replay
        self.epoch = 0
        if replay is not None:
            if replay.batch_size != self.batch_size or replay.drop_last:
                raise ValueError("replay: the DeviceLoader must have the same batch size and "
                                 "drop_last=False")
            self.dataset: ReferenceDataset = ReplayDataset(
                arrays.train_x, arrays.train_y, mean=arrays.mean, std=arrays.std, pad=arrays.pad)
        else:
            self.dataset = ReferenceDataset(
                arrays.train_x, arrays.train_y,
                reference_transform(arrays.mean, arrays.std, pad=arrays.pad, flip=arrays.flip,
                                    size=int(arrays.train_x.shape[-1])))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def _loader(self) -> torch.utils.data.DataLoader:
        # the loader draws its workers' base seed from this generator, not from the global RNG,
        # which the distiller's own sampling (CRD negatives) reads: both paths then see the same
        # global RNG stream. Worker processes seed torchvision's crop/flip from that base seed.
        g = torch.Generator()
        g.manual_seed(self.seed * 100_003 + self.epoch)
        common = dict(batch_size=self.batch_size, num_workers=self.workers, generator=g,
                      pin_memory=self.device.type == "cuda", drop_last=False)
        if self.replay is not None:
            self.replay.set_epoch(self.epoch)
            draws = self.replay.draws()
            self.dataset.set_draws(draws)  # type: ignore[attr-defined]
            return torch.utils.data.DataLoader(self.dataset, sampler=draws.perm.tolist(), **common)
        return torch.utils.data.DataLoader(self.dataset, shuffle=True, **common)

    def __iter__(self) -> Iterator[Batch]:
        nb = self.device.type == "cuda"
        for x, y, index in self._loader():
            yield Batch(x=x.to(self.device, non_blocking=nb), y=y.to(self.device, non_blocking=nb),
                        index=index.to(self.device, non_blocking=nb))
