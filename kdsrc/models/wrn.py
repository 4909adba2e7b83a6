"""Wide ResNets for CIFAR: wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2.

Mirrors ``mdistiller/models/cifar/wrn.py`` (megvii-research/mdistiller @ a08d46f): same module
names (``block{1,2,3}.layer.{i}``, ``convShortcut``), same forward outputs, same initialisation
(N(0, 2/(k*k*out)) convolutions, unit BatchNorm, zero Linear bias).

Decisions on the reference's quirks:

* ``preact_feats`` are obtained by applying the BatchNorm that *follows* each stage to that
  stage's output (``block2.layer[0].bn1``, ``block3.layer[0].bn1`` and the final ``bn1``), i.e. the
  values that the next ReLU sees. Those three modules already ran once in the forward pass, so in
  training mode the reference updates their running statistics (and ``num_batches_tracked``)
  twice per step. Option ``double_bn_update`` (default False) chooses:

  - False: in training mode the pre-activations are computed with
    ``torch.nn.functional.batch_norm`` from batch statistics and the module's affine parameters,
    without touching running statistics. The values equal the reference's (its second call also
    normalises with batch statistics; bit-identical in the CPU tests), only the bookkeeping
    differs: one running-statistics update per step, like every other BatchNorm.
  - True: call the modules again, reproducing the reference bit for bit (two updates per step).

  In eval mode both settings call the module (running statistics, nothing is updated). Only WRN
  *students* are affected; teachers run in eval mode.
* The pre-activation block projects the *activated* input when the shape changes but adds the
  *raw* input on identity shortcuts; kept as in the reference.
* Dropout (``dropRate``) is not implemented: mdistiller always uses 0.
* The pooled vector is ``flatten(1)`` of the 8x8 average pool. The reference uses
  ``reshape(-1, channels)``, which only differs for inputs larger than 32x32 (where it would
  silently mix spatial positions into the batch dimension).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ._common import feature_dict, init_he_normal_


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, stride=1, padding=1, bias=False)
        self.convShortcut = (
            None
            if cin == cout
            else nn.Conv2d(cin, cout, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        return shortcut + out


class WideStage(nn.Module):
    """A run of pre-activation blocks; the ``layer`` attribute gives the reference's key names."""

    def __init__(self, num_blocks: int, cin: int, cout: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            *(
                PreActBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                for i in range(num_blocks)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k: 3x3 stem (16 ch), three stages of 16k/32k/64k channels, BN-ReLU, pool, fc."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 100,
        double_bn_update: bool = False,
    ):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ConfigError(f"WideResNet depth must be 6n+4 (10, 16, 22, ...), got {depth}")
        per_stage = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.double_bn_update = bool(double_bn_update)
        self.stage_channels = channels
        self.conv1 = nn.Conv2d(3, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = WideStage(per_stage, channels[0], channels[1], 1)
        self.block2 = WideStage(per_stage, channels[1], channels[2], 2)
        self.block3 = WideStage(per_stage, channels[2], channels[3], 2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(channels[3], num_classes)
        init_he_normal_(self)

    def forward(self, x: Tensor):
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        pooled = F.avg_pool2d(self.relu(self.bn1(f3)), 8).flatten(1)
        logits = self.fc(pooled)
        bns = self.get_bn_before_relu()
        preacts = [f0] + [self._reapply(bn, f) for bn, f in zip(bns, (f1, f2, f3))]
        return logits, feature_dict([f0, f1, f2, f3], preacts, pooled)

    def _reapply(self, bn: nn.BatchNorm2d, x: Tensor) -> Tensor:
        """``bn(x)`` as the reference computes it, minus the second running-stat update."""
        if self.double_bn_update or not bn.training:
            return bn(x)
        # Same normalisation the module applies in training mode (batch statistics), but no
        # running buffers are passed, so nothing is updated a second time.
        return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.block1, self.block2, self.block3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]

    def get_stage_channels(self) -> list[int]:
        return self.stage_channels


def _factory(depth: int, widen_factor: int):
    def build(num_classes: int = 100, double_bn_update: bool = False) -> WideResNet:
        return WideResNet(depth, widen_factor, num_classes, double_bn_update=double_bn_update)

    return build


BUILDERS = {
    f"wrn_{d}_{k}": _factory(d, k) for d, k in ((16, 1), (16, 2), (40, 1), (40, 2))
}
