"""ImageNet-style ResNets adapted to CIFAR: ResNet18 (BasicBlock 2/2/2/2) and ResNet50
(Bottleneck 3/4/6/3), with a 3x3 stride-1 stem and no max-pool.

Mirrors ``mdistiller/models/cifar/resnetv2.py`` (megvii-research/mdistiller @ a08d46f): same
module names (``layerN.i.shortcut.{0,1}``, ``linear``), same forward outputs, same
initialisation (Kaiming-normal fan_out convolutions, unit BatchNorm, optional zero-init of the
last BN of each residual branch, PyTorch-default Linear).

Decisions on the reference's quirks:

* ``get_stage_channels()`` lists the four stage outputs *without* the 64-channel stem (unlike the
  CIFAR ResNets, whose list starts with the stem). Kept for ResNet50, because OFD slices it with
  ``[1:]`` against ``preact_feats[1:]`` and its alignment depends on that length. The reference
  hard-codes ``[256, 512, 1024, 2048]`` for every depth, which is wrong for ResNet18; here it is
  derived from the blocks, giving ``[64, 128, 256, 512]`` for ResNet18 (any code that used the
  reference's value with ResNet18 would have built wrongly sized connectors).
* The reference's ``encode()`` helper (unused by mdistiller's distillers) is not implemented.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import feature_dict, init_kaiming_fan_out_

STAGE_WIDTHS = (64, 128, 256, 512)


def _projection(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Empty (identity) unless the shape changes, then 1x1 conv + BN."""
    if stride == 1 and cin == cout:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, emit_preact: bool = False):
        super().__init__()
        self.emit_preact = emit_preact
        self.conv1 = nn.Conv2d(cin, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = _projection(cin, width, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor):
        out = F.relu(self.bn1(self.conv1(x)))
        preact = self.bn2(self.conv2(out)) + self.shortcut(x)
        out = F.relu(preact)
        return (out, preact) if self.emit_preact else out


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, emit_preact: bool = False):
        super().__init__()
        cout = width * self.expansion
        self.emit_preact = emit_preact
        self.conv1 = nn.Conv2d(cin, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _projection(cin, cout, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        preact = self.bn3(self.conv3(out)) + self.shortcut(x)
        out = F.relu(preact)
        return (out, preact) if self.emit_preact else out


class ResNetV2(nn.Module):
    def __init__(
        self, block, blocks_per_stage, num_classes: int = 100, zero_init_residual: bool = False
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        stages = []
        for index, (width, count) in enumerate(zip(STAGE_WIDTHS, blocks_per_stage)):
            first_stride = 1 if index == 0 else 2
            stage = []
            for i in range(count):
                stage.append(block(cin, width, first_stride if i == 0 else 1, i == count - 1))
                cin = width * block.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(cin, num_classes)
        init_kaiming_fan_out_(self)
        if zero_init_residual:
            # Each residual branch starts at zero, so every block starts as the identity.
            for stage in self._stages():
                for blk in stage:
                    nn.init.constant_(blk.last_bn().weight, 0)
        self.stage_channels = [w * block.expansion for w in STAGE_WIDTHS]

    def _stages(self) -> tuple[nn.Sequential, ...]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def forward(self, x: Tensor):
        out = F.relu(self.bn1(self.conv1(x)))
        feats, preacts = [out], [out]
        for stage in self._stages():
            out, preact = stage(out)
            feats.append(out)
            preacts.append(preact)
        pooled = self.avgpool(out).flatten(1)
        return self.linear(pooled), feature_dict(feats, preacts, pooled)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, *self._stages()])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [stage[-1].last_bn() for stage in self._stages()]

    def get_stage_channels(self) -> list[int]:
        return self.stage_channels


def resnet18(num_classes: int = 100, zero_init_residual: bool = False) -> ResNetV2:
    return ResNetV2(BasicBlock, (2, 2, 2, 2), num_classes, zero_init_residual)


def resnet50(num_classes: int = 100, zero_init_residual: bool = False) -> ResNetV2:
    return ResNetV2(Bottleneck, (3, 4, 6, 3), num_classes, zero_init_residual)


BUILDERS = {"ResNet18": resnet18, "ResNet50": resnet50}
