"""``dkd``: decoupled knowledge distillation (mdistiller ``mdistiller/distillers/DKD.py``).

``CE·ce_weight + min(epoch/warmup, 1)·(α·TCKD + β·NCKD)`` with the teacher side taken from
``t.probs(T)`` (so Angular-KD's ensemble plugs in). Defaults are ``CFG.DKD`` and the
res32x4→res8x4 YAML (β 8); the per-pair β of the other YAMLs (2 for res56→res20 and
res110→res32, 6 for wrn40_2→wrn16_2/wrn40_1, vgg13→vgg8, vgg13→MobileNetV2) is a run-config
override. The two terms are logged separately (``loss_tckd``, ``loss_nckd``, both including the
ramp and their weight); their sum is mdistiller's ``loss_kd``.
"""

from __future__ import annotations

import torch.nn.functional as F

from ..errors import ConfigError
from ..losses.dkd import dkd_parts
from .base import Distiller
from .registry import register


# The helpers below (loss ramp, settings checks) are shared by the crd, reviewkd and tekap
# distillers.
def ramp(epoch: int, warmup: int) -> float:
    """The reference loss ramp ``min(epoch / warmup, 1)`` (epoch 1-based; warmup 0 → 1)."""
    if warmup <= 0:
        return 1.0
    return min(float(epoch) / float(warmup), 1.0)


def check_warmup(key: str, value: int) -> None:
    if value < 0:
        raise ConfigError(f"method.{key}: must be >= 0 (epochs of the loss ramp), got {value}")


def check_positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"method.{key}: must be > 0, got {value}")


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"method.{key}: expected one of {', '.join(choices)}, got {value!r}")


@register
class DKD(Distiller):
    name = "dkd"
    summary = "Decoupled KD: CE + min(epoch/20,1)·(α·TCKD + β·NCKD), α=1, β=8, T=4"
    cache_needs = frozenset({"logits"})
    defaults = {"ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup": 20}

    def __init__(self, student, teacher, settings, ctx):
        super().__init__(student, teacher, settings, ctx)
        check_positive("temperature", self.settings["temperature"])
        check_warmup("warmup", self.settings["warmup"])

    def forward_train(self, x, y, batch, state):
        s = self.settings
        logits, _ = self.student(x)
        t = self.teacher_outputs(x, y, batch)
        tckd, nckd = dkd_parts(logits, t.probs(s["temperature"]), y, temperature=s["temperature"])
        w = ramp(state.epoch, s["warmup"])
        return logits, {
            "loss_ce": s["ce_weight"] * F.cross_entropy(logits.float(), y),
            "loss_tckd": (w * s["alpha"]) * tckd,
            "loss_nckd": (w * s["beta"]) * nckd,
        }
