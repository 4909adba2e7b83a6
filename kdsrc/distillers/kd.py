"""``kd``: Hinton knowledge distillation with mdistiller's CIFAR weights (CE 0.1, KD 0.9, T 4)."""


from ..losses import kd_loss_from_probs
from ..settings import temperature, weight
from .base import Distiller
from .registry import register


@register
class KD(Distiller):
    name = "kd"
    summary = "Hinton KD: 0.1·CE + 0.9·T²·KL(teacher ‖ student), T=4"
    declared = (
        weight("ce_weight", 0.1, "weight of the cross-entropy"),
        weight("kd_weight", 0.9, "weight of T²·KL(teacher ‖ student)"),
        temperature("temperature", 4.0),
    )
    cache_needs = frozenset({"logits"})

    def forward_train(self, x, y, batch, state):
        logits, _ = self.student(x)
        s = self.settings
        t = self.teacher_outputs(x, y, batch)
        return logits, {
            "loss_ce": s["ce_weight"] * self.ce(logits, y, batch),
            "loss_kd": s["kd_weight"] * kd_loss_from_probs(
                logits, t.probs(s["temperature"]), temperature=s["temperature"]),
        }
