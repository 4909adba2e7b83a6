"""``vanilla``: cross-entropy only. Trains students alone and pretrains teachers."""


from ..settings import weight
from .base import Distiller
from .registry import register


@register
class Vanilla(Distiller):
    name = "vanilla"
    summary = "cross-entropy only (students alone, teacher pretraining)"
    needs_teacher = False
    declared = (weight("ce_weight", 1.0, "weight of the cross-entropy"),)

    def forward_train(self, x, y, batch, state):
        logits, _ = self.student(x)
        return logits, {"loss_ce": self.settings["ce_weight"] * self.ce(logits, y, batch)}
