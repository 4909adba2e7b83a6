"""``dkd``: decoupled knowledge distillation (mdistiller ``mdistiller/distillers/DKD.py``).

``CE·ce_weight + min(epoch/warmup, 1)·(α·TCKD + β·NCKD)`` with the teacher side taken from
``t.probs(T)`` (so Angular-KD's ensemble plugs in). Defaults are ``CFG.DKD`` and the
res32x4→res8x4 YAML (β 8); the per-pair β of the other YAMLs (2 for res56→res20 and
res110→res32, 6 for wrn40_2→wrn16_2/wrn40_1, vgg13→vgg8, vgg13→MobileNetV2) is a run-config
override. The two terms are logged separately (``loss_tckd``, ``loss_nckd``, both including the
ramp and their weight); their sum is mdistiller's ``loss_kd``.
"""

from __future__ import annotations


from ..losses.dkd import dkd_parts
from ..settings import temperature, warmup, weight
from .base import Distiller
from .registry import register


def dkd_settings(prefix: str = "", *, warmup_epochs: int = 20) -> tuple:
    """DKD's α, β, T and ramp, as DKD declares them (``prefix`` "dkd_" where another method
    carries a DKD term: crd, tekap)."""
    return (
        weight(f"{prefix}alpha", 1.0, "weight of TCKD (target vs non-target classes)"),
        weight(f"{prefix}beta", 8.0, "weight of NCKD (among the non-target classes)"),
        temperature(f"{prefix}temperature", 4.0),
        warmup(f"{prefix}warmup", warmup_epochs),
    )


@register
class DKD(Distiller):
    name = "dkd"
    summary = "Decoupled KD: CE + min(epoch/20,1)·(α·TCKD + β·NCKD), α=1, β=8, T=4"
    cache_needs = frozenset({"logits"})
    declared = (weight("ce_weight", 1.0, "weight of the cross-entropy"), *dkd_settings())

    def forward_train(self, x, y, batch, state):
        s = self.settings
        logits, _ = self.student(x)
        t = self.teacher_outputs(x, y, batch)
        tckd, nckd = dkd_parts(logits, t.probs(s["temperature"]), y, temperature=s["temperature"])
        w = state.ramp(s["warmup"])
        return logits, {
            "loss_ce": s["ce_weight"] * self.ce(logits, y, batch),
            "loss_tckd": (w * s["alpha"]) * tckd,
            "loss_nckd": (w * s["beta"]) * nckd,
        }
