"""The deterministic weight rule behind tests/fixtures/models/reference_outputs.pt.

The fixture was produced by applying exactly this rule to the *reference* models
(see tests/fixtures/models/README.md); the tests apply it to ours. Every value depends only on
the state-dict key and shape, so identical keys give identical weights. Scales keep activations
O(1) through 100+ layers, so the comparison is meaningful for every depth.
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import nn

INPUT_SEED = 0
INPUT_SHAPE = (2, 3, 32, 32)


def reference_input() -> torch.Tensor:
    return torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(INPUT_SEED))


def fill_value(key: str, like: torch.Tensor) -> torch.Tensor | None:
    """The value for ``key`` (None: integer buffers keep their value)."""
    if not like.is_floating_point():
        return None
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    r = torch.randn(like.shape, generator=gen, dtype=torch.float32)
    if key.endswith("running_var"):
        return 1.0 + 0.1 * r.abs()
    if key.endswith("running_mean"):
        return 0.1 * r
    if like.dim() == 1:  # BN gamma around 1, BN beta and biases around 0
        return 1.0 + 0.1 * r if key.endswith("weight") else 0.1 * r
    return r / math.sqrt(like[0].numel())  # conv/linear weight: unit gain per layer


@torch.no_grad()
def fill_model(model: nn.Module) -> nn.Module:
    state = model.state_dict()
    for key, tensor in state.items():
        value = fill_value(key, tensor)
        if value is not None:
            tensor.copy_(value)
    return model


def feature_summary(tensors) -> torch.Tensor:
    """Compact fingerprint of a list of feature maps: the per-channel spatial means of sample 0,
    concatenated over the list (channel order matters, so a permuted map does not match)."""
    return torch.cat([t.detach()[0].mean(dim=(1, 2)) for t in tensors])


def init_sums(model: nn.Module) -> torch.Tensor:
    """Per-key float64 sums of a state dict, in key order (a fingerprint of the init)."""
    return torch.tensor([t.double().sum().item() for t in model.state_dict().values()], dtype=torch.float64)
