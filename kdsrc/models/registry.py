"""Name -> constructor table: the 32-px CIFAR zoo (the names of mdistiller's ``cifar_model_dict``)
and the timm models (``timm-<model>``, :mod:`kdsrc.models.timm_zoo`)."""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from ..errors import ConfigError, unknown_name
from . import mobilenetv2, resnet, resnetv2, shufflenetv1, shufflenetv2, timm_zoo, vgg, wrn

#: the 32-px CIFAR zoo (mdistiller's names)
CIFAR_MODEL_NAMES = (
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4",
    "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
    "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet18", "ResNet50",
)  # fmt: skip
MODEL_NAMES = CIFAR_MODEL_NAMES + tuple(timm_zoo.TIMM_MODELS)

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    **resnet.BUILDERS,
    **wrn.BUILDERS,
    **vgg.BUILDERS,
    **mobilenetv2.BUILDERS,
    **shufflenetv1.BUILDERS,
    **shufflenetv2.BUILDERS,
    **resnetv2.BUILDERS,
    **timm_zoo.BUILDERS,
}
assert set(_BUILDERS) == set(MODEL_NAMES), "registry and MODEL_NAMES disagree"


def model_options(name: str) -> tuple[str, ...]:
    """Keyword options ``build_model`` accepts for ``name`` besides ``num_classes``."""
    builder = _builder(name)
    return tuple(p for p in inspect.signature(builder).parameters if p != "num_classes")


def build_model(name: str, num_classes: int = 100, **options) -> nn.Module:
    """A freshly initialised model: a CIFAR one whose state-dict keys match mdistiller's, or a
    timm one whose keys are timm's."""
    builder = _builder(name)
    allowed = model_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        raise ConfigError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; its options: {valid}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    return builder(num_classes=num_classes, **options)


def _builder(name: str) -> Callable[..., nn.Module]:
    try:
        return _BUILDERS[name]
    except (KeyError, TypeError):  # TypeError: unhashable name
        raise unknown_name("model", name, MODEL_NAMES) from None
