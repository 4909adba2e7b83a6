"""ShuffleNet V2 for CIFAR (registry name ``ShuffleV2``: net size 1, stage widths 116/232/464,
3/7/3 units, 1024-channel head).

Mirrors ``mdistiller/models/cifar/ShuffleNetv2.py`` (megvii-research/mdistiller @ a08d46f): same
module names (``conv1``, ``bn1``, ``layer{1,2,3}.0`` = down-sampling unit ``conv1..5/bn1..5``,
``layer{1,2,3}.{i>0}`` = basic unit ``conv1..3/bn1..3``, ``conv2``, ``bn2``, ``linear``), same
forward outputs, and PyTorch's default initialisation (the reference has no init loop).

Decisions on the reference's quirks:

* A basic unit's pre-activation is ``cat([x1, bn3(...)])`` taken *before* the channel shuffle,
  while its output is shuffled. So ``preact_feats[i]`` (i >= 1) has a different channel order
  from ``feats[i]`` and ``relu(preact_feats[i])`` is not ``feats[i]``. Kept, because
  distillers written against the reference (OFD, ReviewKD) consume exactly these tensors.
* The stem is a 1x1 convolution to 24 channels with no max-pool; the head is conv2-BN-ReLU then
  ``avg_pool2d(4)``.
* ``get_bn_before_relu()`` raises NotImplementedError as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import channel_shuffle, feature_dict

STEM_CHANNELS = 24
# net_size 1 of the reference's table: three stage widths + head width, and units per stage.
WIDTHS = (116, 232, 464, 1024)
UNITS = (3, 7, 3)


def _conv(cin: int, cout: int, kernel: int = 1, stride: int = 1, depthwise: bool = False):
    return nn.Conv2d(
        cin, cout, kernel, stride=stride, padding=kernel // 2,
        groups=cin if depthwise else 1, bias=False,
    )


class BasicUnit(nn.Module):
    """Split channels in half; transform one half (1x1, dw 3x3, 1x1); concat; shuffle."""

    def __init__(self, channels: int, emit_preact: bool = False):
        super().__init__()
        half = int(channels * 0.5)
        self.emit_preact = emit_preact
        self.conv1 = _conv(half, half)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = _conv(half, half, kernel=3, depthwise=True)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = _conv(half, half)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor):
        split = int(x.size(1) * 0.5)
        kept, transformed = x[:, :split], x[:, split:]
        out = F.relu(self.bn1(self.conv1(transformed)))
        out = self.bn2(self.conv2(out))
        branch_preact = self.bn3(self.conv3(out))
        out = channel_shuffle(torch.cat([kept, F.relu(branch_preact)], 1), 2)
        if not self.emit_preact:
            return out
        return out, torch.cat([kept, branch_preact], 1)


class DownUnit(nn.Module):
    """Two stride-2 branches (dw 3x3 -> 1x1, and 1x1 -> dw 3x3 -> 1x1), concat, shuffle."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        # left branch
        self.conv1 = _conv(cin, cin, kernel=3, stride=2, depthwise=True)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = _conv(cin, mid)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch
        self.conv3 = _conv(cin, mid)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = _conv(mid, mid, kernel=3, stride=2, depthwise=True)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = _conv(mid, mid)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(nn.Module):
    def __init__(
        self,
        widths: tuple[int, int, int, int] = WIDTHS,
        units: tuple[int, int, int] = UNITS,
        num_classes: int = 100,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.layer1 = self._stage(STEM_CHANNELS, widths[0], units[0])
        self.layer2 = self._stage(widths[0], widths[1], units[1])
        self.layer3 = self._stage(widths[1], widths[2], units[2])
        self.conv2 = nn.Conv2d(widths[2], widths[3], kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)
        self.stage_channels = [STEM_CHANNELS, *widths[:3]]

    @staticmethod
    def _stage(cin: int, width: int, num_units: int) -> nn.Sequential:
        units: list[nn.Module] = [DownUnit(cin, width)]
        units += [BasicUnit(width, emit_preact=(i == num_units - 1)) for i in range(num_units)]
        return nn.Sequential(*units)

    def forward(self, x: Tensor):
        out = F.relu(self.bn1(self.conv1(x)))
        feats, preacts = [out], [out]
        for stage in (self.layer1, self.layer2, self.layer3):
            out, preact = stage(out)
            feats.append(out)
            preacts.append(preact)
        head = F.relu(self.bn2(self.conv2(out)))
        pooled = F.avg_pool2d(head, 4).flatten(1)
        return self.linear(pooled), feature_dict(feats, preacts, pooled)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self):
        raise NotImplementedError('ShuffleNetV2 is not supported as an "Overhaul" (OFD) teacher')

    def get_stage_channels(self) -> list[int]:
        return self.stage_channels


def shuffle_v2(num_classes: int = 100) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes=num_classes)


BUILDERS = {"ShuffleV2": shuffle_v2}
