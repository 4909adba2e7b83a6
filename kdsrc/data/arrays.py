"""The in-memory form of a dataset: uint8 image tensors, labels and normalisation facts."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from kdsrc.errors import unknown_name

SPLITS = ("train", "test")


@dataclass(frozen=True, eq=False)
class DatasetArrays:
    """A whole image-classification dataset held as tensors on the CPU.

    Images are ``uint8`` ``N x C x H x W`` (contiguous), labels ``int64``. ``mean`` / ``std`` are
    the per-channel normalisation constants in ``[0, 1]`` pixel units (what ``Normalize`` takes
    after ``ToTensor``); ``pad`` is the zero padding of the random crop and ``flip`` says whether a
    random horizontal flip is a label-preserving augmentation for this dataset.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pad: int
    flip: bool
    class_names: tuple[str, ...] = ()
    source: str = ""  # a short human-readable note on where the data came from
    #: after :meth:`holdout`: the arrays it was split from and the training rows it kept
    #: (ascending; a teacher cache of the whole training set is read at these rows)
    whole: "DatasetArrays | None" = None
    rows: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for split in SPLITS:
            x, y = self.split(split)
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"{self.name}: {split}_x must be uint8 N x C x H x W, "
                                 f"got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(f"{self.name}: {split}_y must be int64 of length {x.shape[0]}, "
                                 f"got {y.dtype} {tuple(y.shape)}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"{self.name}: train and test images differ in shape")
        if not (len(self.mean) == len(self.std) == self.train_x.shape[1]):
            raise ValueError(f"{self.name}: mean/std need one value per channel")

    @property
    def num_train(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_x.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(int(s) for s in self.train_x.shape[1:])  # type: ignore[return-value]

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of ``"train"`` or ``"test"``."""
        if split == "train":
            return self.train_x, self.train_y
        if split == "test":
            return self.test_x, self.test_y
        raise unknown_name("split", split, SPLITS)

    def head(self, n_train: int, n_test: int | None = None) -> "DatasetArrays":
        """A copy with the first ``n_train`` training images (and the first ``n_test`` test
        images; None keeps the test split as it is): small real data for tests and benchmarks."""
        test = {} if n_test is None else {"test_x": self.test_x[:n_test].clone(),
                                          "test_y": self.test_y[:n_test].clone()}
        return replace(self, train_x=self.train_x[:n_train].clone(),
                       train_y=self.train_y[:n_train].clone(), **test)

    def holdout(self, fraction: float, seed: int) -> tuple["DatasetArrays", "DatasetArrays"]:
        """``(train, validation)``: the training set split as ``torch.utils.data.random_split``
        splits it with a generator seeded by ``seed`` (the multi-view project's 90/10 split):
        the first ``int((1 - fraction) · N)`` positions of ``randperm(N)`` train, the rest
        validate. The validation set is the returned copy's ``test`` split; indices are kept in
        ascending order (a batch's ``index`` is its position in the smaller training set)."""
        n = self.num_train
        n_train = int((1.0 - fraction) * n)
        if not 0 < n_train < n:
            raise ValueError(f"{self.name}: val_fraction {fraction} leaves {n_train} of {n} "
                             f"images for training")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
        train_idx, val_idx = perm[:n_train].sort().values, perm[n_train:].sort().values
        train = replace(self, train_x=self.train_x[train_idx].contiguous(),
                        train_y=self.train_y[train_idx].contiguous(), whole=self,
                        rows=train_idx)
        val = replace(self, test_x=self.train_x[val_idx].contiguous(),
                      test_y=self.train_y[val_idx].contiguous())
        return train, val

    def __repr__(self) -> str:
        return (f"DatasetArrays(name={self.name!r}, train={self.num_train}, test={self.num_test}, "
                f"image_shape={self.image_shape}, num_classes={self.num_classes}, "
                f"pad={self.pad}, flip={self.flip})")
