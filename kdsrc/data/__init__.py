"""Datasets and the device-resident loader.

``load_dataset(name)`` returns a :class:`DatasetArrays` (uint8 images + labels + normalisation);
``DeviceLoader`` serves it from the device with the recipe's crop/flip augmentation done on the
device (:func:`augment`); ``reference_transform`` / ``ReferenceDataset`` are the torchvision PIL
pipeline of the published recipe, for reference-mode runs, benchmarks and equivalence tests.

Datasets: ``cifar100`` and ``cifar10`` (torchvision, md5-checked, optional verified download) and ``digits``
(scikit-learn's embedded handwritten digits shaped as 3 x 32 x 32 images; no network).
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from kdsrc.data.arrays import SPLITS, DatasetArrays
from kdsrc.data.augment import (ReferenceDataset, augment, crop_flip_u8, normalize_u8,
                                reference_transform)
from kdsrc.data.cifar import (CIFAR10_MD5, CIFAR10_URL, CIFAR100_MD5, CIFAR100_URL, CIFAR_SPECS,
                              load_cifar, load_cifar10, load_cifar100)
from kdsrc.data.digits import DIGITS_SPLIT, load_digits_arrays
from kdsrc.dataset_facts import DATASET_FACTS, DATASET_NAMES, DatasetFacts
from kdsrc.data.loader import Batch, DeviceLoader, EpochDraws, epoch_draws, epoch_seed
from kdsrc.errors import unknown_name


def load_dataset(name: str, root: str | Path = "data", download: bool = False) -> DatasetArrays:
    """Load a dataset by name. ``root`` / ``download`` matter for datasets read from disk
    (``cifar100``, ``cifar10``); ``digits`` is embedded and ignores them."""
    if name in CIFAR_SPECS:
        spec = CIFAR_SPECS[name]
        if not download:
            return load_cifar(spec, root, download=False)
        # parallel pipeline jobs on a fresh machine: one downloads, the others wait for it
        Path(root).mkdir(parents=True, exist_ok=True)
        with open(Path(root) / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return load_cifar(spec, root, download=True)
    if name == "digits":
        return load_digits_arrays()
    raise unknown_name("dataset", name, DATASET_NAMES)


__all__ = [
    "DATASET_NAMES", "DATASET_FACTS", "DatasetFacts", "SPLITS", "load_dataset", "DatasetArrays", "DeviceLoader", "Batch",
    "EpochDraws", "epoch_draws", "epoch_seed", "augment", "crop_flip_u8", "normalize_u8",
    "reference_transform", "ReferenceDataset", "load_cifar", "load_cifar100", "load_cifar10",
    "load_digits_arrays", "CIFAR100_URL", "CIFAR100_MD5", "CIFAR10_URL", "CIFAR10_MD5",
    "DIGITS_SPLIT",
]
