"""A model that sees its input upsampled: ``solver.upsample`` (and a run's ``teacher.upsample``).

The multi-view project feeds its ImageNet ViT-S the 32-px CIFAR pipeline (crop with padding,
flip, AutoAugment) resized to 224 px by torchvision's ``Resize(224)`` on the tensor, in
fine-tuning, evaluation and when it computes the teacher's logits. Here a forward pre-hook does
the same resize on the device, so the model keeps its own parameter names (its checkpoints stay
timm's) and everything that calls it (a distiller, the teacher cache, an evaluation) gives it
the 32-px batch. Upsampling never minifies, so antialiasing changes nothing: bilinear
``F.interpolate`` (``align_corners=False``) equals ``Resize`` here.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

_ATTR = "_kdsrc_upsample"


def upsample_inputs(model: nn.Module, size: int | None) -> nn.Module:
    """Make ``model`` resize its (first) input to ``size x size`` before its forward; None: as
    it is. Idempotent for the same size; returns ``model``."""
    if size is None:
        return model
    have = getattr(model, _ATTR, None)
    if have is not None:
        if have != size:
            raise ValueError(f"model already upsamples to {have} px, not {size}")
        return model

    def hook(_module, args):
        x = args[0]
        if x.shape[-2:] == (size, size):
            return None
        up = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return (up, *args[1:])

    model.register_forward_pre_hook(hook)
    setattr(model, _ATTR, size)
    return model


def upsample_of(model: nn.Module) -> int | None:
    """The size ``model`` upsamples its input to, or None."""
    return getattr(model, _ATTR, None)
