"""CIFAR ResNets: resnet8/14/20/32/44/56/110 (widths 16-16-32-64) and resnet8x4/resnet32x4
(widths 32-64-128-256).

Mirrors ``mdistiller/models/cifar/resnet.py`` (megvii-research/mdistiller @ a08d46f): same
module names and nesting (state-dict keys of the published teachers load strictly), same
forward outputs, same initialisation (Kaiming-normal fan_out convolutions, unit BatchNorm,
PyTorch-default Linear).

Decisions on the reference's quirks:

* Only the BasicBlock variant exists here. The reference also has a Bottleneck path for
  ``9n+2`` depths, but none of the registered names uses it.
* The last block of each stage returns ``(out, preact)`` (preact = residual sum before the final
  ReLU), so ``layerN(x)`` returns a pair, exactly as in the reference. ``get_feat_modules()``
  hands these stages out, so their call signature is part of the contract.
* A block's projection shortcut is constructed *before* its convolutions (the reference builds it
  in ``_make_layer`` before the block) but attached *after* them. That keeps both the RNG draw
  order and the state-dict key order of the reference.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ._common import feature_dict, init_kaiming_fan_out_

WIDTHS_X1 = (16, 16, 32, 64)
WIDTHS_X4 = (32, 64, 128, 256)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus identity or 1x1 projection, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, emit_preact: bool = False):
        super().__init__()
        projection = None
        if stride != 1 or cin != cout:
            projection = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )
        self.emit_preact = emit_preact
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = projection

    def forward(self, x: Tensor):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        preact = out + shortcut
        out = F.relu(preact)
        return (out, preact) if self.emit_preact else out


def _stage(cin: int, cout: int, num_blocks: int, stride: int) -> nn.Sequential:
    blocks = []
    for i in range(num_blocks):
        blocks.append(
            BasicBlock(
                cin if i == 0 else cout,
                cout,
                stride if i == 0 else 1,
                emit_preact=(i == num_blocks - 1),
            )
        )
    return nn.Sequential(*blocks)


class CifarResNet(nn.Module):
    """3x3 stem, three BasicBlock stages of ``(depth-2)/6`` blocks, 8x8 average pool, fc."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, ...), got {depth}")
        per_stage = (depth - 2) // 6
        self.stage_channels = list(widths)
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _stage(widths[0], widths[1], per_stage, stride=1)
        self.layer2 = _stage(widths[1], widths[2], per_stage, stride=2)
        self.layer3 = _stage(widths[2], widths[3], per_stage, stride=2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(widths[3], num_classes)
        init_kaiming_fan_out_(self)

    def forward(self, x: Tensor):
        out = self.relu(self.bn1(self.conv1(x)))
        feats, preacts = [out], [out]  # the stem has no separate pre-activation entry
        for stage in (self.layer1, self.layer2, self.layer3):
            out, preact = stage(out)
            feats.append(out)
            preacts.append(preact)
        pooled = self.avgpool(out).flatten(1)
        return self.fc(pooled), feature_dict(feats, preacts, pooled)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList(
            [self.conv1, self.bn1, self.relu, self.layer1, self.layer2, self.layer3]
        )

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [stage[-1].bn2 for stage in (self.layer1, self.layer2, self.layer3)]

    def get_stage_channels(self) -> list[int]:
        return self.stage_channels


def _factory(depth: int, widths: tuple[int, int, int, int]):
    def build(num_classes: int = 100) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes)

    return build


BUILDERS = {
    **{f"resnet{d}": _factory(d, WIDTHS_X1) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": _factory(8, WIDTHS_X4),
    "resnet32x4": _factory(32, WIDTHS_X4),
}
