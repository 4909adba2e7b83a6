"""``mlkd``: Multi-Level Logit Distillation (Jin, Wang, Lin; CVPR 2023), as its official CIFAR-100 code.

Official code: Jin-Ying/Multi-Level-Logit-Distillation -- ``mdistiller/distillers/KD_ours.py``
(the loss), ``mdistiller/engine/trainer.py`` (``AugTrainer``, trainer "ours": one step on a
(weak, strong) pair), ``mdistiller/dataset/cifar100.py`` (the strong image), configs
``configs/cifar100/ours/*.yaml``. Maths in :mod:`kdsrc.losses.mlkd`, strong image in
:mod:`kdsrc.data.strong_aug`.

One step::

    weak   = the standard batch x (crop + flip)
    strong = crop + flip + RandAugment(n=2) + Cutout of the same images
    z_w, z_s = student(weak), student(strong)          # two forward passes (BN sees each view alone)
    q_w[T] = teacher probs at T on the weak image       # self.teacher_outputs(x, y, batch)
    q_s[T] = teacher probs at T on the strong image     # self.teacher_outputs(x_strong, y, None)
    masks from q_w[1] (batch medians)
    loss_ce        = ce_weight · CE(z_w, y)
    loss_ce_strong = ce_weight · CE(z_s, y)
    loss_kd_weak, loss_kd_strong, loss_cc, loss_bc = mlkd_loss_terms(...)   (see kdsrc.losses.mlkd)

The official code logs ``loss_ce`` = both CE terms and ``loss_kd`` = ``loss_kd_weak + loss_kd_strong``;
here each term is its own entry (same sum).

The teacher on the strong image is asked for with ``batch=None``: that means "not the standard
augmentation of this batch", so a precomputed teacher cache (indexed by index/crop/flip) is not
used for it and the teacher runs forward; an Angular-KD ``teacher_transform`` still sees it (its
``batch`` argument is None).

Settings (defaults = the official CIFAR-100 code and configs):

* ``ce_weight`` 0.1, ``kd_weight`` 0.9 -- ``cfg.KD.LOSS.CE_WEIGHT/KD_WEIGHT`` (mdistiller defaults;
  the ``ours`` CIFAR configs do not override them); ``kd_weight`` multiplies every temperature's
  kd/cc/bc term.
* ``temperatures`` [4, 3, 5, 2, 6] -- ``cfg.KD.TEMPERATURE`` = 4 plus the hard-coded 3, 5, 2, 6.
* ``strong_reuses_weak_at`` [2, 6] -- QUIRK: the official ``loss_kd_strong`` uses the strong image
  at T = 4, 3, 5 but the WEAK image (again, unmasked) at T = 2 and 6. ``[]``: the strong image at
  every temperature.
* ``strong_relations`` false -- QUIRK: the official code computes ``loss_cc_strong`` and
  ``loss_bc_strong`` but leaves them out of the loss dict; true adds them as
  ``loss_cc_strong``/``loss_bc_strong`` (times ``kd_weight``).
* ``mask_mode`` "as_coded" -- QUIRK: the masks multiply the *batch-mean* losses
  (``(loss * mask).mean()`` with ``reduce=True``), i.e. scale each masked term by the fraction of
  masked-in samples/classes; "per_sample" is the commented-out ``reduce=False`` variant.
* ``strong_crop`` "independent" -- the official ``MultipleApply`` runs the weak and the strong
  transform separately, each with its own RandomCrop/RandomHorizontalFlip; "shared" reuses the
  weak image's crop corner and flip (``batch.dy/dx/flip``) for the strong image.
* ``randaugment_n`` 2 (``RandAugment(2, 10)``), ``cutout_max`` 0.5 (``Cutout(U[0, 0.5))``).
* ``bc_double_softmax`` false -- Angular-KD's ``MLKD_div.bc_loss`` was not adapted to probability
  targets and applies ``softmax(q_T / T)`` to the ensemble probabilities; true reproduces that
  (for the Angular-KD MLKD plug-in only; on plain MLKD it would soften the teacher twice).

Solver (plan business, not set here): the official ``ours`` CIFAR-100 configs use batch 64, SGD
momentum 0.9, WD 5e-4, decay ×0.1 at 150/180/210, LR 0.025 (0.01 for MobileNetV2/ShuffleV1/V2
students), and 240 epochs for the resnet/wrn/vgg pairs, 480 for res50→MV2, vgg13→MV2,
wrn40_2→ShuV1 and 960 for res32x4→ShuV1/V2. The Angular-KD repository's MLKD configs use 480
epochs for every pair. Each epoch costs two student and two teacher forward passes per batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.strong_aug import draw_strong, strong_image
from ..errors import ConfigError
from ..losses.mlkd import MASK_MODES, mlkd_confidence_masks, mlkd_loss_terms
from ..settings import Setting, choice, flag, weight
from .base import Distiller
from .registry import register

STRONG_CROPS = ("independent", "shared")


@register
class MLKD(Distiller):
    name = "mlkd"
    summary = ("Multi-Level Logit Distillation: weak+strong (RandAugment) views, multi-T KD "
               "with confidence masks + class/batch correlation, CE 0.1, KD 0.9")
    capture_blocker = ("its strong image draws each batch's RandAugment ops and magnitudes on "
                       "the host, which a replayed graph would repeat")
    declared = (
        weight("ce_weight", 0.1, "weight of the cross-entropy"),
        weight("kd_weight", 0.9, "weight of every temperature's kd/cc/bc term"),
        Setting("temperatures", [4.0, 3.0, 5.0, 2.0, 6.0], "the KD temperatures",
                type="numbers", above=0.0, min_items=1, unique=True),
        Setting("strong_reuses_weak_at", [2.0, 6.0], "temperatures at which the strong-view "
                "term reuses the weak image (official quirk; a subset of temperatures)",
                type="numbers", above=0.0),
        flag("strong_relations", False, "add the computed but unused strong cc/bc terms"),
        choice("mask_mode", "as_coded", MASK_MODES, "how the confidence masks weigh the terms"),
        choice("strong_crop", "independent", STRONG_CROPS, "crop/flip of the strong image"),
        Setting("randaugment_n", 2, "RandAugment operations per strong image", type="integer",
                low=0),
        Setting("cutout_max", 0.5, "largest Cutout fraction of the strong image", low=0.0,
                high=1.0),
        flag("bc_double_softmax", False, "Angular-KD's MLKD bc term: softmax of probabilities"),
    )
    #: the weak image is the batch's own augmented images, so a teacher cache may serve it; the
    #: strong image always runs the live teacher (asked for with batch=None)
    cache_needs = frozenset({"logits"})

    @classmethod
    def finalize_settings(cls, settings):
        s = super().finalize_settings(settings)
        if not set(s["strong_reuses_weak_at"]) <= set(s["temperatures"]):
            raise ConfigError(f"method.strong_reuses_weak_at: expected a subset of "
                              f"method.temperatures {s['temperatures']}, got "
                              f"{s['strong_reuses_weak_at']!r}")
        return s

    # -- the strong image ---------------------------------------------------------------------
    def strong_images(self, x: torch.Tensor, batch) -> torch.Tensor:
        """The normalised strong image of ``batch`` (same dtype and memory format as ``x``)."""
        ctx, s = self.ctx, self.settings
        if ctx.train_images is None:
            raise RuntimeError("mlkd needs DistillContext.train_images (the uint8 training images) "
                               "to build its strong image")
        if batch is None or getattr(batch, "index", None) is None:
            raise RuntimeError("mlkd needs the Batch (its dataset indices) to build the strong image")
        shared = s["strong_crop"] == "shared"
        if shared and (batch.dy is None or batch.dx is None):
            raise RuntimeError("strong_crop 'shared' needs the batch's crop draws (dy, dx)")
        draws = draw_strong(len(batch.index), n=s["randaugment_n"], cutout_max=s["cutout_max"],
                            pad=None if shared else ctx.pad, flip=ctx.flip)
        images = ctx.train_images[batch.index.to(ctx.train_images.device)]
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous()
        xs = strong_image(images, draws, pad=ctx.pad, mean=ctx.mean, std=ctx.std,
                         dy=batch.dy if shared else None, dx=batch.dx if shared else None,
                         flip=batch.flip if shared else None, dtype=x.dtype,
                         channels_last=channels_last)
        return xs.to(x.device)

    # -- one step ----------------------------------------------------------------------------
    def forward_train(self, x, y, batch, state):
        s = self.settings
        x_strong = self.strong_images(x, batch)
        logits_w, _ = self.student(x)
        logits_s, _ = self.student(x_strong)
        t_w = self.teacher_outputs(x, y, batch)
        t_s = self.teacher_outputs(x_strong, y, None)   # None: not the standard view (no cache)

        temps = s["temperatures"]
        reuse = set(s["strong_reuses_weak_at"])
        q_w = {t: t_w.probs(t) for t in temps}
        strong_temps = temps if s["strong_relations"] else [t for t in temps if t not in reuse]
        q_s = {t: t_s.probs(t) for t in strong_temps}
        sample_mask, class_mask = mlkd_confidence_masks(t_w.probs(1.0))
        bc_w = bc_s = None
        if s["bc_double_softmax"]:
            bc_w = {t: F.softmax(q / t, dim=1) for t, q in q_w.items()}
            bc_s = {t: F.softmax(q / t, dim=1) for t, q in q_s.items()}
        terms = mlkd_loss_terms(logits_w, logits_s, q_w, q_s, sample_mask, class_mask,
                                temperatures=temps, strong_reuses_weak_at=s["strong_reuses_weak_at"],
                                kd_weight=s["kd_weight"], mask_mode=s["mask_mode"],
                                strong_relations=s["strong_relations"],
                                bc_teacher_weak=bc_w, bc_teacher_strong=bc_s)
        losses = {
            "loss_ce": s["ce_weight"] * self.ce(logits_w, y, batch),
            "loss_ce_strong": s["ce_weight"] * self.ce(logits_s, y, batch),
        }
        losses.update({f"loss_{k}": v for k, v in terms.items()})
        return logits_w, losses
