"""A model's classifier: what a head-only fine-tune trains and what a fine-tune starts afresh."""

from __future__ import annotations

from torch import nn


def classifier_of(model: nn.Module) -> nn.Module:
    """A model's classifier: timm's ``get_classifier()``, else its last linear layer (the CIFAR
    zoo's ``fc``/``linear``/``classifier``)."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__}: no linear classifier to train alone")
    return linears[-1]


def classifier_keys(model: nn.Module) -> set[str]:
    """The state-dict keys of the classifier's tensors (``head.weight``, ``fc.bias``, ...)."""
    head = classifier_of(model)
    prefix = next(name for name, m in model.named_modules() if m is head)
    return {f"{prefix}.{k}" if prefix else k for k in head.state_dict()}
