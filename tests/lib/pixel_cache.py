"""A fake teacher and dataset for the teacher-cache tests (tests/conftest.py puts this folder on
sys.path): the 'teacher' returns its input pixels as logits, so every stored entry can be
checked against the exact augmented image."""

import torch
from torch import nn

from kdsrc.data import DatasetArrays

PAD = 2
H = 6


class PixelTeacher(nn.Module):
    """logits = the flattened input (C = 3·H·W), pooled_feat = per-channel row sums (D = 3·H)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))
        self.calls = 0
        self.fail_at: int | None = None

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        return x.flatten(1) * self.scale, {"pooled_feat": x.sum(dim=3).flatten(1) * self.scale}


def fake_data(n: int = 3, flip: bool = True, seed: int = 0, name: str = "fake") -> DatasetArrays:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, H, H), generator=g, dtype=torch.uint8)
    return DatasetArrays(name=name, train_x=x, train_y=torch.arange(n) % 2,
                         test_x=x[:1].clone(), test_y=torch.zeros(1, dtype=torch.int64),
                         num_classes=2, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), pad=PAD,
                         flip=flip)
