"""MobileNetV2 for CIFAR (registry name ``MobileNetV2`` = the reference's ``mobile_half``:
expansion T=6, width multiplier 0.5).

Mirrors ``mdistiller/models/cifar/mobilenetv2.py`` (megvii-research/mdistiller @ a08d46f): same
module names (``conv1``, ``blocks.{g}.{i}.conv.{0..7}``, ``conv2``, ``classifier.0``), same
forward outputs, same initialisation (N(0, 2/(k*k*out)) convolutions, unit BatchNorm,
N(0, 0.01) Linear with zero bias).

Decisions on the reference's quirks:

* The reference returns no ``preact_feats``. Here ``preact_feats`` is the same list as ``feats``:
  every reported position is the output of an inverted-residual group, which ends in a linear
  (BN, no ReLU) bottleneck, so its pre-activation *is* its output. Element 0 (the stem, which
  does end in a ReLU) is the post-ReLU output, the zoo-wide convention for the stem.
* The reference constructor prints ``T width_mult`` to stdout; this one prints nothing.
* The stem has stride 2 (32 -> 16); ``feats`` are taken after groups 1, 2, 4 and 6. The final
  pool is ``AvgPool2d(input_size // 16, ceil_mode=True)`` with ``input_size`` fixed at
  construction (32 -> kernel 2), exactly as in the reference.
* The reference's ``remove_avg`` switch (unused by mdistiller) is not implemented.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from ._common import feature_dict, init_he_normal_

# (expansion, output channels at width 1, blocks, first stride); None = the model's T.
GROUPS = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
FEATURE_GROUPS = (1, 2, 4, 6)  # groups whose outputs are reported in feats[1:]


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.use_res_connect = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    def __init__(
        self,
        num_classes: int = 100,
        expansion: int = 6,
        width_mult: float = 0.5,
        input_size: int = 32,
    ):
        super().__init__()
        if input_size % 32 != 0:
            raise ConfigError(f"MobileNetV2 input_size must be a multiple of 32, got {input_size}")
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, channels, kernel=3, stride=2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in GROUPS:
            cout = int(c * width_mult)
            group = []
            for i in range(n):
                group.append(InvertedResidual(channels, cout, s if i == 0 else 1, t or expansion))
                channels = cout
            self.blocks.append(nn.Sequential(*group))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, self.last_channel, kernel=1, stride=1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        self.avgpool = nn.AvgPool2d(input_size // 16, ceil_mode=True)
        init_he_normal_(self, linear_std=0.01)
        self.stage_channels = [int(c * width_mult) for c in (32, 24, 32, 96, 320)]

    def forward(self, x: Tensor):
        out = self.conv1(x)
        feats = [out]
        for index, group in enumerate(self.blocks):
            out = group(out)
            if index in FEATURE_GROUPS:
                feats.append(out)
        pooled = self.avgpool(self.conv2(out)).flatten(1)
        return self.classifier(pooled), feature_dict(feats, list(feats), pooled)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.blocks])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.blocks[g][-1].conv[-1] for g in FEATURE_GROUPS]

    def get_stage_channels(self) -> list[int]:
        return self.stage_channels


def mobile_half(num_classes: int = 100) -> MobileNetV2:
    return MobileNetV2(num_classes, expansion=6, width_mult=0.5)


BUILDERS = {"MobileNetV2": mobile_half}
