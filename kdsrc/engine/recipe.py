"""The parts of a training recipe beyond the reference's SGD step: the optimizer and its weight
decay groups, mixup/cutmix, and which of them the CUDA-graphed step cannot run yet.

Each is a solver key of :data:`kdsrc.config.SOLVER` whose default is the reference recipe
(SGD on every parameter, no mixing), so a run that leaves them alone trains exactly as before.
Where timm has the part the transformer recipes use, it is timm's (``param_groups_weight_decay``,
``Mixup``): RSD's code is built on timm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.classifier import classifier_of


def _decay_groups(modules: list[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """timm's ``param_groups_weight_decay`` over every trainable module, merged into two groups:
    no decay for biases, norm parameters (every 1-D parameter) and a module's
    ``no_weight_decay()`` names (a ViT's position embedding and class token)."""
    from timm.optim import param_groups_weight_decay

    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in modules:
        skip = module.no_weight_decay() if hasattr(module, "no_weight_decay") else ()
        for group in param_groups_weight_decay(module, weight_decay, no_weight_decay_list=skip):
            (no_decay if group["weight_decay"] == 0.0 else decay).extend(group["params"])
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def freeze_all_but_head(student: nn.Module) -> None:
    """``trainable: head``: every student parameter but the classifier's stops needing
    gradients (no backward through the frozen part is kept for them)."""
    head = {id(p) for p in classifier_of(student).parameters()}
    for p in student.parameters():
        p.requires_grad_(id(p) in head)


def head_only_modes(student: nn.Module) -> None:
    """``trainable: head`` during training: the frozen part in eval mode (BatchNorm statistics
    and dropout fixed, a frozen feature extractor), the classifier in training mode."""
    student.eval()
    classifier_of(student).train()


def build_optimizer(distiller, solver: dict[str, Any]) -> torch.optim.Optimizer:
    """The run's optimizer over the distiller's trainable parameters (student + extra modules).

    The reference (``optimizer: sgd``, ``weight_decay_on: all``, ``trainable: all``) is one SGD
    group over :meth:`~kdsrc.distillers.Distiller.trainable_parameters`, in that order, as
    always. ``trainable: head`` freezes the student but its classifier first."""
    wd = solver["weight_decay"]
    if solver["trainable"] == "head":
        # the classifier (and any extra module of the method) alone, one group
        freeze_all_but_head(distiller.student)
        params: Any = [p for p in distiller.trainable_parameters() if p.requires_grad]
    elif solver["weight_decay_on"] == "all":
        params = distiller.trainable_parameters()
    else:
        params = _decay_groups([distiller.student, *distiller.extra_modules()], wd)
    if solver["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=solver["lr"], weight_decay=wd)
    return torch.optim.SGD(params, lr=solver["lr"], momentum=solver["momentum"],
                           weight_decay=wd, nesterov=solver["nesterov"])


def mixes(solver: dict[str, Any]) -> bool:
    return solver["mixup_alpha"] > 0 or solver["cutmix_alpha"] > 0


def augments_per_image(solver: dict[str, Any]) -> bool:
    """Whether the recipe draws augmentations beyond crop and flip for every image."""
    return bool(solver["randaugment"] != "off" or solver["autoaugment"] != "off"
                or solver["color_jitter"] or solver["random_erasing"])


def cache_blocker(solver: dict[str, Any]) -> str | None:
    """Why a teacher cache cannot stand for the teacher online in this recipe, or None. A
    cache holds the teacher's outputs on the stored images and their crop/flip variants,
    normalised with the dataset's statistics; a recipe that shows the teacher anything else
    needs it online."""
    if solver["image_size"] is not None:
        return "each batch is resized: a random resized crop is not a cached variant"
    if mixes(solver):
        return "mixup/cutmix: the teacher sees the mixed images, which no cache holds"
    if augments_per_image(solver):
        return ("each image is augmented afresh (autoaugment, randaugment, color_jitter or "
                "random_erasing): not a cached variant")
    if solver["normalize"] != "dataset":
        return (f"normalize: {solver['normalize']} (a cache holds the teacher's outputs on "
                "images normalised with the dataset's statistics)")
    return None


def build_mixup(solver: dict[str, Any], num_classes: int):
    """timm's ``Mixup`` (per batch, as RSD's loader) or None when neither mixup nor cutmix is on.

    It mixes a batch with its reverse in place and returns the soft targets (label smoothing
    folded in, as timm's train.py does); its draws come from numpy's and python's RNGs, which
    every resume file saves. The batch size must be even (timm's rule), so a mixing run's
    loader drops the last partial batch, as timm's training loader does."""
    if not mixes(solver):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=solver["mixup_alpha"], cutmix_alpha=solver["cutmix_alpha"],
                 prob=solver["mixup_prob"], switch_prob=solver["mixup_switch_prob"],
                 mode="batch", label_smoothing=solver["label_smoothing"],
                 num_classes=num_classes)


def resize_spec(solver: dict[str, Any], student: str):
    """The 224-px path's :class:`~kdsrc.data.resize.ResizeSpec` of a run, or None (the stored
    images as they are). The evaluation crop fraction defaults to the student's."""
    if solver["image_size"] is None:
        return None
    from ..data.resize import ResizeSpec
    from ..models.timm_zoo import crop_pct

    pct = solver["crop_pct"] if solver["crop_pct"] is not None else crop_pct(student)
    return ResizeSpec(size=solver["image_size"], crop_pct=pct)


def normalization(solver: dict[str, Any], data) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of the run: the dataset's, or the recipe's constants."""
    from ..config import NORMALIZATIONS

    if solver["normalize"] == "dataset":
        return tuple(data.mean), tuple(data.std)
    return NORMALIZATIONS[solver["normalize"]]


def recipe_capture_blocker(solver: dict[str, Any]) -> str | None:
    """Why the CUDA-graphed step cannot run this recipe, or None (its SGD step, no clipping
    and no mixing are what it captures today)."""
    if solver["optimizer"] != "sgd":
        return f"optimizer {solver['optimizer']} (the captured step is SGD's)"
    if solver["clip_grad_norm"] is not None:
        return "gradient clipping"
    if mixes(solver):
        return "mixup/cutmix (drawn on the host per batch)"
    if solver["image_size"] is not None:
        return "resizing each batch (the captured step crops the stored images)"
    if augments_per_image(solver):
        return "image augmentations beyond crop and flip (drawn per image)"
    return None
