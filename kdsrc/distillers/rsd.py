"""``rsd``: redundancy-suppression distillation (Zhang, Liu, Ran, Ma, "Cross-Architecture
Distillation Made Simple with Redundancy Suppression", ICCV 2025; code spacewanderx/RSD
``distillers/rsd.py``).

Method, as the official code implements it::

    projector = Linear(d_s, γ·d_s, bias=False) → BatchNorm1d(γ·d_s) → GELU → Linear(γ·d_s, d_t, bias=False)
                (Linear weights trunc_normal(std 0.02); extra parameters γ·d_s² + 2γ·d_s + γ·d_s·d_t)
    L = ce_weight · CE_ls(z_s, y) + rsd_weight · L_RSD(projector(f_s), f_t; κ)

with ``f_s`` / ``f_t`` the student's / teacher's pooled pre-logit feature and ``L_RSD`` from
:func:`kdsrc.losses.rsd_loss` (batch-standardised cross-correlation pushed to the identity, κ on
the off-diagonal). No logit distillation; the teacher's logits are not read, so the method can use
a teacher cache that stores pooled features (``cache_needs = {"pooled_feat"}``). The projector
sits only on the distillation branch; the student's classifier is untouched. Defaults are the
official CLI's: ``--rsd-loss-weight 0.1 --rsd-kappa 0.01 --rsd-gamma 2``.

Adaptation to the 32-px zoo (the paper's recipe is timm at 224 px with transformer/MLP teachers,
300 epochs, SGD 0.05 cosine, WD 2e-3, label smoothing 0.1). Here RSD runs with the zoo's
standard recipe (mdistiller CIFAR-100: 240 epochs, batch 64, SGD 0.05/0.01 step decay, WD 5e-4,
crop+flip) and the zoo models' ``pooled_feat`` (the input of their classifier), on the zoo's
cross-architecture pairs resnet32x4→ShuffleV2, vgg13→MobileNetV2 and ResNet50→MobileNetV2.
``label_smoothing`` is exposed (the official CNN recipe uses 0.1) but defaults to 0.0, the zoo's
plain cross-entropy, so RSD is compared with the other methods under one recipe.

A batch of one sample (possible as the last batch of an epoch) has no batch statistics: the
RSD term is then zero for that step (the official loader drops the last partial batch).
"""

from __future__ import annotations

from torch import nn

from ..losses.rsd import rsd_loss
from ..settings import Setting, weight
from .base import Distiller
from .registry import register


def build_rsd_projector(d_s: int, d_t: int, gamma: int = 2) -> nn.Sequential:
    """The RSD decoupling module, initialised as the reference's ``init_weights``."""
    hidden = int(gamma) * int(d_s)
    proj = nn.Sequential(
        nn.Linear(d_s, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.GELU(),
        nn.Linear(hidden, d_t, bias=False),
    )
    for m in proj.modules():
        if isinstance(m, nn.Linear):
            # timm's trunc_normal_(std=.02) cuts at ±2 absolute, as torch's does
            nn.init.trunc_normal_(m.weight, std=0.02)
    return proj


@register
class RSD(Distiller):
    name = "rsd"
    summary = ("RSD: CE + 0.1·Barlow-Twins redundancy suppression between projected student and "
               "teacher pooled features (κ 0.01, γ 2)")
    declared = (
        weight("ce_weight", 1.0, "weight of the cross-entropy"),
        weight("rsd_weight", 0.1, "weight of the redundancy-suppression term"),
        weight("kappa", 0.01, "weight of the off-diagonal (redundancy) part of the RSD term"),
        Setting("gamma", 2, "projector width as a multiple of the teacher feature", type="integer",
                low=1),
        Setting("label_smoothing", 0.0, "label smoothing of the cross-entropy", low=0.0,
                high=1.0),
    )
    cache_needs = frozenset({"pooled_feat"})

    def __init__(self, student, teacher, settings, ctx):
        super().__init__(student, teacher, settings, ctx)
        d_s = int(ctx.student_dims["pooled_feat"])
        d_t = int(ctx.teacher_dims["pooled_feat"])
        self.projector = build_rsd_projector(d_s, d_t, self.settings["gamma"])

    def extra_modules(self) -> list[nn.Module]:
        return [self.projector]

    def forward_train(self, x, y, batch, state):
        s = self.settings
        logits, feats = self.student(x)
        t = self.teacher_outputs(x, y, batch)
        loss_ce = s["ce_weight"] * self.ce(logits, y, batch,
                                               label_smoothing=s["label_smoothing"] or None)
        f_s = feats["pooled_feat"]
        if f_s.shape[0] < 2:
            loss_rsd = sum(p.sum() for p in self.projector.parameters()) * 0.0
        else:
            proj = self.projector(f_s)
            loss_rsd = s["rsd_weight"] * rsd_loss(proj, t.feats["pooled_feat"].detach(),
                                                  kappa=s["kappa"])
        return logits, {"loss_ce": loss_ce, "loss_rsd": loss_rsd}
