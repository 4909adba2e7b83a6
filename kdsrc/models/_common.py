"""Helpers shared by the CIFAR model families.

The two weight initialisations below reproduce the reference's loops draw for draw: they visit
``model.modules()`` in registration order and call the same in-place samplers with the same
standard deviations, so a model built after ``torch.manual_seed(s)`` starts from exactly the
weights the reference would start from.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def feature_dict(feats: list[Tensor], preact_feats: list[Tensor], pooled: Tensor) -> dict:
    """The ``feats`` mapping every model returns next to its logits."""
    return {"feats": feats, "preact_feats": preact_feats, "pooled_feat": pooled}


@torch.no_grad()
def init_kaiming_fan_out_(model: nn.Module) -> None:
    """ResNet-style init: Kaiming-normal (fan_out) convolutions, unit BatchNorm; Linear untouched."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


@torch.no_grad()
def init_he_normal_(model: nn.Module, linear_std: float | None = None) -> None:
    """WRN/VGG/MobileNetV2 init: N(0, 2/(k*k*out)) convolutions, unit BatchNorm, zero Linear bias.

    ``std`` is computed as ``sqrt(2/n)`` (not ``sqrt(2)/sqrt(n)`` as kaiming_normal_ would) to
    stay bit-identical to the reference. ``linear_std`` also redraws Linear weights (VGG and
    MobileNetV2 use 0.01; WRN keeps PyTorch's default Linear weight).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.normal_(0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1)
            m.bias.zero_()
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                m.weight.normal_(0, linear_std)
            m.bias.zero_()


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave channel groups: (N, g*k, H, W) -> channel order k-major (ShuffleNet)."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
