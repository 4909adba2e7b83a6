"""ShuffleNet V1 for CIFAR (registry name ``ShuffleV1``: stage widths 240/480/960, 4/8/4 units,
3 groups).

Mirrors ``mdistiller/models/cifar/ShuffleNetv1.py`` (megvii-research/mdistiller @ a08d46f): same
module names (``conv1``, ``bn1``, ``layer{1,2,3}.{i}.conv1..bn3``, ``linear``), same forward
outputs, and PyTorch's default initialisation (the reference has no init loop).

Decisions on the reference's quirks:

* The stem is a 1x1 convolution to 24 channels with no max-pool; the head is ``avg_pool2d(4)``.
* The first unit of ``layer1`` uses an ungrouped first 1x1 convolution (the reference keys this
  on "input has 24 channels"), so its channel shuffle is the identity.
* A stride-2 unit concatenates its branch with the average-pooled input, so its branch only
  produces ``width - input width`` channels; its pre-activation is that concatenation.
* ``get_bn_before_relu()`` raises NotImplementedError as in the reference: a stride-2 unit's
  pre-activation is a concatenation, not the output of one BatchNorm.
* The reference has no ``get_stage_channels()`` (its line is commented out, so calling it raises
  AttributeError). Added here, returning the channel counts of ``feats`` ([24, 240, 480, 960]),
  the convention of every other model in the zoo; code that worked with the reference is not
  affected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import channel_shuffle, feature_dict

STEM_CHANNELS = 24


class ShuffleUnit(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1, then add (stride 1) or concat (2)."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int, emit_preact: bool = False):
        super().__init__()
        mid = cout // 4
        self.first_groups = 1 if cin == STEM_CHANNELS else groups
        self.stride = stride
        self.emit_preact = emit_preact
        self.conv1 = nn.Conv2d(cin, mid, kernel_size=1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(
            mid, mid, kernel_size=3, stride=stride, padding=1, groups=mid, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        )

    def forward(self, x: Tensor):
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = self.shortcut(x)
        preact = torch.cat([out, shortcut], 1) if self.stride == 2 else out + shortcut
        out = F.relu(preact)
        return (out, preact) if self.emit_preact else out


class ShuffleNetV1(nn.Module):
    def __init__(
        self,
        widths: tuple[int, int, int] = (240, 480, 960),
        units: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        cin = STEM_CHANNELS
        self.layer1 = self._stage(cin, widths[0], units[0], groups)
        self.layer2 = self._stage(widths[0], widths[1], units[1], groups)
        self.layer3 = self._stage(widths[1], widths[2], units[2], groups)
        self.linear = nn.Linear(widths[2], num_classes)
        self.stage_channels = [STEM_CHANNELS, *widths]

    @staticmethod
    def _stage(cin: int, width: int, num_units: int, groups: int) -> nn.Sequential:
        units = [ShuffleUnit(cin, width - cin, 2, groups, emit_preact=(num_units == 1))]
        units += [
            ShuffleUnit(width, width, 1, groups, emit_preact=(i == num_units - 1))
            for i in range(1, num_units)
        ]
        return nn.Sequential(*units)

    def forward(self, x: Tensor):
        out = F.relu(self.bn1(self.conv1(x)))
        feats, preacts = [out], [out]
        for stage in (self.layer1, self.layer2, self.layer3):
            out, preact = stage(out)
            feats.append(out)
            preacts.append(preact)
        pooled = F.avg_pool2d(out, 4).flatten(1)
        return self.linear(pooled), feature_dict(feats, preacts, pooled)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self):
        raise NotImplementedError('ShuffleNet is not supported as an "Overhaul" (OFD) teacher')

    def get_stage_channels(self) -> list[int]:
        return self.stage_channels


def shuffle_v1(num_classes: int = 100) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes=num_classes)


BUILDERS = {"ShuffleV1": shuffle_v1}
