"""CIFAR model zoo with mdistiller-compatible weights.

``build_model(name, num_classes=100, **options)`` builds any of ``MODEL_NAMES`` (the names of
mdistiller's ``cifar_model_dict``). Every model returns ``(logits, feats)`` with
``feats["feats"]`` (stage outputs, stem first), ``feats["preact_feats"]`` (the same positions
before each stage's last ReLU) and ``feats["pooled_feat"]`` (the classifier's input), and has
``get_feat_modules()``, ``get_stage_channels()`` and (not ShuffleNets) ``get_bn_before_relu()``.
State-dict keys and shapes equal the reference's, so the published teachers load strictly with
``load_teacher``. Per-family decisions on the reference's quirks are in each module's docstring.
"""

from __future__ import annotations

import torch
from torch import nn

from .checkpoint import first_mismatch, load_state_dict_file, load_teacher, load_weights
from .registry import MODEL_NAMES, build_model, model_options

__all__ = [
    "MODEL_NAMES",
    "build_model",
    "model_options",
    "load_teacher",
    "load_state_dict_file",
    "load_weights",
    "first_mismatch",
    "feature_dims",
]


@torch.no_grad()
def feature_dims(model: nn.Module, input_size: int = 32) -> dict:
    """Shapes (without batch) of what ``model`` returns for one ``3 x input_size^2`` image.

    Runs one eval-mode forward on zeros (no BatchNorm statistic is touched) and restores the
    model's training flags afterwards. Distillers use it to size their connectors.
    """
    param = next(model.parameters())
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        x = torch.zeros(1, 3, input_size, input_size, device=param.device, dtype=param.dtype)
        logits, feats = model(x)
    finally:
        for module, mode in modes.items():
            module.training = mode
    return {
        "feats": [tuple(f.shape[1:]) for f in feats["feats"]],
        "preact_feats": [tuple(f.shape[1:]) for f in feats["preact_feats"]],
        "pooled_feat": feats["pooled_feat"].shape[1],
        "num_classes": logits.shape[1],
    }
