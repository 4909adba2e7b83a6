"""``ldrld``: LDRLD, "Local Dense Logit Relations for Enhanced KD" (Xu et al., ICCV 2025), as coded.

Official code: yema-web/LDRLD (a RepDistiller fork) -- ``distiller_zoo/LDRLD.py`` (the loss),
``helper/loops.py`` (how it enters the total), ``helper/util.py`` (LR warm-up),
``train_student.py`` (settings); README command for resnet32x4 -> resnet8x4:
``--distill ldrld -r 1.0 -a 10.5 -b 7.0 --kd_T 4`` (``--k 7`` default). Maths in
:mod:`kdsrc.losses.ldrld`.

Loss terms (``r`` = ``ce_weight``, the official ``-r/--gamma``)::

    L_LDR, RNTK = ldrld_loss(z_s, q_T, T, k)     # q_T = self.teacher_outputs(...).probs(T)
    ce_scaling "as_coded":  loss_ce = r·r·CE,  loss_ldr = r·α·L_LDR,  loss_rntk = r·β·RNTK
    ce_scaling "clean":     loss_ce = r·CE,    loss_ldr = α·L_LDR,    loss_rntk = β·RNTK

QUIRK ``ce_scaling``: ``helper/loops.py`` does ``loss = opt.gamma * loss_kd`` for LDRLD, and
``loss_kd`` (``LDRLD.forward``) already contains ``gamma·CE``; so the whole loss is scaled by r
and CE by r². Identical to "clean" at the README's r = 1.

Settings (defaults = README command / ``train_student.py``):

* ``ce_weight`` 1.0 (``-r``), ``alpha`` 10.5 (``-a``, L_LDR weight), ``beta`` 7.0 (``-b``, RNTK
  weight), ``temperature`` 4.0 (``--kd_T``), ``k`` 7 (``--k``; needs k < number of classes),
  ``adw_gamma`` 0.05 (hard-coded γ of ``ADW``).
* ``rank_by`` "student" -- the official code takes the top-k from the STUDENT logits; "teacher"
  ranks by the teacher's probabilities instead (the groups then follow the teacher).
* ``ce_scaling`` "as_coded" | "clean" (above).

Solver (the LR quirk lives in the solver, not here): the official recipe is batch 64, 240 epochs,
SGD lr 0.05 (0.01 for MobileNetV2/ShuffleV1/ShuffleV2 students), momentum 0.9, WD 5e-4, decay ×0.1
at 150/180/210, with ``--wram_up 20`` on by default through the buggy
``adjust_learning_rate_wram_up``. To reproduce it set ``solver: {warmup_epochs: 20,
warmup_mode: ldrld_as_coded}`` (LR epoch/20·lr for epochs 1–19, then stuck at 0.95·lr = 0.0475
until the first decay); ``warmup_mode: linear`` is the intended warm-up, ``warmup_epochs: 0``
the common mdistiller recipe.
"""

from __future__ import annotations


from ..errors import ConfigError
from ..losses.ldrld import ldrld_loss
from ..settings import Setting, choice, temperature, weight
from .base import Distiller
from .registry import register

RANK_BY = ("student", "teacher")
CE_SCALINGS = ("as_coded", "clean")


@register
class LDRLD(Distiller):
    name = "ldrld"
    summary = ("LDRLD: ADW-weighted KL over the top-k rank pairs + full top-k group, and RNTK on "
               "the other classes; r=1, α=10.5, β=7, T=4, k=7")
    declared = (
        weight("ce_weight", 1.0, "weight of the cross-entropy (-r)"),
        weight("alpha", 10.5, "weight of L_LDR, the ranked-pair KL (-a)"),
        weight("beta", 7.0, "weight of RNTK on the non-top-k classes (-b)"),
        temperature("temperature", 4.0),
        Setting("k", 7, "top-k classes ranked (below the number of classes)", type="integer",
                low=1),
        weight("adw_gamma", 0.05, "γ of the adaptive decay weights (ADW)"),
        choice("rank_by", "student", RANK_BY, "whose logits rank the top-k"),
        choice("ce_scaling", "as_coded", CE_SCALINGS, "as_coded: the official r·(r·CE + ...) "
               "scaling; clean: r·CE"),
    )
    cache_needs = frozenset({"logits"})

    @classmethod
    def check_dataset(cls, settings, facts):
        if settings["k"] >= facts.classes:
            raise ConfigError(
                f"method.k: expected an integer from 1 to {facts.classes - 1}, got "
                f"{settings['k']} -- {facts.name} has {facts.classes} classes; the top-k groups "
                "and the remaining classes must both be non-empty")

    def forward_train(self, x, y, batch, state):
        s = self.settings
        logits, _ = self.student(x)
        t = self.teacher_outputs(x, y, batch)
        q = t.probs(s["temperature"])
        l_ldr, rntk = ldrld_loss(logits, q, temperature=s["temperature"], k=s["k"],
                                 gamma=s["adw_gamma"],
                                 rank_scores=q if s["rank_by"] == "teacher" else None)
        r = s["ce_weight"]
        outer = r if s["ce_scaling"] == "as_coded" else 1.0
        return logits, {
            "loss_ce": outer * r * self.ce(logits, y, batch),
            "loss_ldr": outer * s["alpha"] * l_ldr,
            "loss_rntk": outer * s["beta"] * rntk,
        }
