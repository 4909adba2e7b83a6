"""VGG with BatchNorm for CIFAR: vgg8, vgg11, vgg13, vgg16, vgg19.

Mirrors ``mdistiller/models/cifar/vgg.py`` (megvii-research/mdistiller @ a08d46f), i.e. its
``vgg*_bn`` constructors (the registry names drop the ``_bn``): five conv blocks ``block0..4``,
pools ``pool0..4``, one ``Linear(512, C)`` classifier; same initialisation (N(0, 2/(k*k*out))
convolutions with zero bias, unit BatchNorm, N(0, 0.01) Linear with zero bias).

Decisions on the reference's quirks:

* Each block ends with its BatchNorm; the block's last ReLU is applied in ``forward``, so
  ``preact_feats`` are the BN outputs (``get_bn_before_relu()`` returns those BN modules).
  Element 0 of ``preact_feats`` is the post-ReLU stem output, as everywhere in the zoo.
* ``pool3`` is applied only when the input height is exactly 64 (Tiny-ImageNet); for 32x32 inputs
  block3 and block4 both run at 4x4. ``pool4`` is a global average pool. Kept as is.
* Only the BatchNorm variants exist (the registry never uses the plain ones).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import feature_dict, init_he_normal_

# Output channels of each conv in block0..block4.
CONFIGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def _conv_block(cin: int, widths: tuple[int, ...]) -> nn.Sequential:
    """(conv3x3 + bias, BN, ReLU) per width, without the final ReLU."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(cin, width, kernel_size=3, padding=1), nn.BatchNorm2d(width)]
        layers.append(nn.ReLU(inplace=True))
        cin = width
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    def __init__(self, config: tuple[tuple[int, ...], ...], num_classes: int = 100):
        super().__init__()
        ins = [3] + [widths[-1] for widths in config[:-1]]
        self.block0 = _conv_block(ins[0], config[0])
        self.block1 = _conv_block(ins[1], config[1])
        self.block2 = _conv_block(ins[2], config[2])
        self.block3 = _conv_block(ins[3], config[3])
        self.block4 = _conv_block(ins[4], config[4])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(512, num_classes)
        self.stage_channels = [widths[-1] for widths in config]
        init_he_normal_(self, linear_std=0.01)

    def forward(self, x: Tensor):
        downsample_before = (None, self.pool0, self.pool1, self.pool2,
                             self.pool3 if x.shape[2] == 64 else None)
        blocks = (self.block0, self.block1, self.block2, self.block3, self.block4)
        feats, preacts = [], []
        out = x
        for pool, block in zip(downsample_before, blocks):
            if pool is not None:
                out = pool(out)
            preact = block(out)
            out = F.relu(preact)
            feats.append(out)
            preacts.append(preact)
        preacts[0] = feats[0]  # the stem entry is post-ReLU, as in the reference
        pooled = self.pool4(out).flatten(1)
        return self.classifier(pooled), feature_dict(feats, preacts, pooled)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList(
            [self.block0, self.pool0, self.block1, self.pool1, self.block2,
             self.pool2, self.block3, self.pool3, self.block4, self.pool4]
        )

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.block1[-1], self.block2[-1], self.block3[-1], self.block4[-1]]

    def get_stage_channels(self) -> list[int]:
        return self.stage_channels


def _factory(config):
    def build(num_classes: int = 100) -> VGG:
        return VGG(config, num_classes)

    return build


BUILDERS = {name: _factory(config) for name, config in CONFIGS.items()}
