"""Transformer and modern-CNN models from timm, under path-safe names ``timm-<timm model>``.

RSD (ICCV 2025) trains these at 224 px and its code is built on timm, so the models are timm's
own modules: parameter names and shapes are timm's, and timm checkpoints load into them. Each is
given the zoo's output contract (``forward(x) -> (logits, feats)``): ``feats["pooled_feat"]`` is
the pre-logit feature — the input of the model's classifier layer, taken by a forward pre-hook,
so it is exactly what the classifier sees (after the head's pooling, norm and any head dropout)
— and ``feats["feats"]`` / ``feats["preact_feats"]`` hold one entry, the output of timm's
``forward_features`` (tokens ``[B, N, D]`` for a ViT or Mixer, ``[B, H, W, C]`` for Swin,
``[B, C, H, W]`` for a CNN). Methods that read logits or the pooled feature (KD, DKD, CRD, RSD)
run on them unchanged; methods that fuse stage feature maps (ReviewKD, the Angular-KD views
read the pooled feature and work) are for the 32-px CIFAR zoo.

``vit6_p4_32`` is the multi-view project's small ViT student (anguskk109/VIT-DISTILL,
``student_vit.py`` with the configuration of ``distill_train.py``): 32 px, patch 4, width 192,
depth 6, 3 heads, MLP ratio 4, class token, LayerNorm eps 1e-5, dropout 0.2 after the MLP's GELU
and after its second linear layer, 0.1 on the attention weights, none elsewhere. Built from
timm's ``VisionTransformer`` (timm would also drop after the attention projection: that dropout
is removed to match), so its parameter names are timm's, not the reference's.

No weights are ever fetched here (``pretrained=False``): pretrained weights come only through the
pipeline's pinned downloads (URL + sha256).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

PREFIX = "timm-"

#: zoo name -> (timm model, input size in px, evaluation crop fraction). The timm models of
#: RSD's pairs and the multi-view project's teacher, plus the small ViT student. The crop
#: fractions are timm 0.6.5's default configs (RSD's timm; current timm gives 0.95 for
#: resnet18 and convnext_tiny).
TIMM_MODELS: dict[str, tuple[str, int, float]] = {
    "timm-vit_small_patch16_224": ("vit_small_patch16_224", 224, 0.9),
    "timm-deit_tiny_patch16_224": ("deit_tiny_patch16_224", 224, 0.9),
    "timm-swin_tiny_patch4_window7_224": ("swin_tiny_patch4_window7_224", 224, 0.9),
    "timm-convnext_tiny": ("convnext_tiny", 224, 0.875),
    "timm-mixer_b16_224": ("mixer_b16_224", 224, 0.875),
    "timm-resnet18": ("resnet18", 224, 0.875),
    "timm-mobilenetv2_100": ("mobilenetv2_100", 224, 0.875),
    "vit6_p4_32": ("vit6_p4_32", 32, 1.0),
    "vit4_p8_64": ("vit4_p8_64", 64, 1.0),
    "vit3_p8_64": ("vit3_p8_64", 64, 1.0),
    "vit2_p4_32": ("vit2_p4_32", 32, 1.0),
}

#: small timm ViTs for the CPU plan quick_vit (name -> image size, patch, width, depth, heads):
#: timm's VisionTransformer with its defaults (class token, LayerNorm eps 1e-6, no dropout)
SMALL_VITS: dict[str, tuple[int, int, int, int, int]] = {
    "vit4_p8_64": (64, 8, 96, 4, 3),     # the quick_vit teacher (upsampled from 32 px)
    "vit3_p8_64": (64, 8, 64, 3, 2),     # a student that sees its images upsampled to 64 px
    "vit2_p4_32": (32, 4, 64, 2, 2),     # a student at the stored 32 px
}


def input_size(name: str) -> int:
    """The image side a model is built for (32 for the CIFAR zoo)."""
    return TIMM_MODELS[name][1] if name in TIMM_MODELS else 32


#: models whose input size is fixed by their architecture (patch grid, windows, token mixing)
FIXED_SIZE = frozenset({"timm-vit_small_patch16_224", "timm-deit_tiny_patch16_224",
                        "timm-swin_tiny_patch4_window7_224", "timm-mixer_b16_224", "vit6_p4_32",
                        *SMALL_VITS})


def crop_pct(name: str) -> float:
    """The evaluation centre-crop fraction of a model (1: no crop, the CIFAR zoo)."""
    return TIMM_MODELS[name][2] if name in TIMM_MODELS else 1.0


def _contract_forward(self, x: torch.Tensor):
    """``(logits, feats)`` of a timm model (the zoo's contract, see the module docstring)."""
    classifier = self.get_classifier()
    features = self.forward_features(x)
    logits = self.forward_head(features)
    pooled, classifier._kdsrc_input = classifier._kdsrc_input, None
    return logits, {"feats": [features], "preact_feats": [features], "pooled_feat": pooled}


def _keep_input(module: nn.Module, args) -> None:
    module._kdsrc_input = args[0]


def with_contract(model: nn.Module) -> nn.Module:
    """``model`` (a timm model) answering ``forward`` with the zoo's contract.

    The instance's class becomes a subclass of its own whose ``forward`` is the contract's, and
    a pre-hook on its classifier keeps the classifier's input for that forward to return: no
    module is added or renamed, so the state dict is timm's exactly."""
    cls = type(model)
    classifier = model.get_classifier()
    if not isinstance(classifier, nn.Module) or isinstance(classifier, nn.Identity):
        raise ValueError(f"{cls.__name__}: no classifier layer to take the pre-logit feature from")
    model.__class__ = type(f"Kdsrc{cls.__name__}", (cls,), {"forward": _contract_forward,
                                                           "__module__": __name__})
    classifier._kdsrc_input = None
    classifier.register_forward_pre_hook(_keep_input)
    return model


def adapt_checkpoint(name: str, state, model: nn.Module):
    """A timm model's state dict in the installed timm's layout. RSD's teachers were saved with
    timm 0.6.5, whose Swin keeps each stage's patch merging at the stage's end, stores the
    attention buffers and names the classifier ``head``; timm's own ``checkpoint_filter_fn``
    moves and renames them (ViT, Mixer and ConvNeXt keys are the same in both). Other models'
    states are returned as they are."""
    if name not in TIMM_MODELS or not TIMM_MODELS[name][0].startswith("swin_"):
        return state
    from timm.models.swin_transformer import checkpoint_filter_fn

    if "head.fc.weight" in state or "head.weight" not in state:
        return state            # already this timm's layout (or not a Swin file at all)
    return checkpoint_filter_fn(state, model)


def _timm():
    try:
        import timm
    except ImportError:   # a base dependency; say how to get it rather than fail deep inside
        from ..errors import ConfigError

        raise ConfigError("timm models need the timm package (pip install -e . -c "
                          "constraints.txt installs it)") from None
    return timm


def build_timm(arch: str, num_classes: int = 100) -> nn.Module:
    """A freshly initialised timm model ``arch`` with the zoo's contract."""
    model = _timm().create_model(arch, pretrained=False, num_classes=num_classes)
    return with_contract(model)


def build_vit6_p4_32(num_classes: int = 10) -> nn.Module:
    """The multi-view project's small ViT student (see the module docstring)."""
    from timm.models.vision_transformer import VisionTransformer

    _timm()
    model = VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3,
                              mlp_ratio=4.0, qkv_bias=True, num_classes=num_classes,
                              global_pool="token", class_token=True, drop_rate=0.0,
                              pos_drop_rate=0.0, proj_drop_rate=0.2, attn_drop_rate=0.1,
                              norm_layer=partial(nn.LayerNorm, eps=1e-5))
    for block in model.blocks:
        # timm drops after the attention projection too; the reference does not
        block.attn.proj_drop = nn.Identity()
    return with_contract(model)


def build_small_vit(name: str, num_classes: int = 10) -> nn.Module:
    """One of :data:`SMALL_VITS`."""
    from timm.models.vision_transformer import VisionTransformer

    _timm()
    size, patch, width, depth, heads = SMALL_VITS[name]
    return with_contract(VisionTransformer(img_size=size, patch_size=patch, embed_dim=width,
                                           depth=depth, num_heads=heads,
                                           num_classes=num_classes))


def _builder(name: str, arch: str) -> Callable[..., nn.Module]:
    if name == "vit6_p4_32":
        return build_vit6_p4_32
    if name in SMALL_VITS:
        return partial(build_small_vit, name)

    def build(num_classes: int = 100) -> nn.Module:
        return build_timm(arch, num_classes=num_classes)

    build.__name__ = f"build_{arch}"
    return build


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    name: _builder(name, arch) for name, (arch, _, _) in TIMM_MODELS.items()
}
