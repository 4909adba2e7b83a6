"""Multi-Level Logit Distillation (MLKD, Jin et al., CVPR 2023) as the official code computes it.

Source: Jin-Ying/Multi-Level-Logit-Distillation ``mdistiller/distillers/KD_ours.py`` (``kd_loss``,
``cc_loss``, ``bc_loss``, ``KD_ours.forward_train``); the same maths is in june6423/Angular-KD
``mdistiller/distillers/MLKD.py`` and, with ensemble probabilities as teacher targets,
``MLKD_div.py``.

Every function takes the teacher side as PROBABILITIES at the temperature in question
(``TeacherOutputs.probs(T)``: ``softmax(z_t / T)`` for a plain teacher, the Angular-KD ensemble
``q_T`` when it plugs in), so one implementation serves MLKD and Angular-KD's MLKD variant.

Notation: ``z_s`` student logits (B x C), ``q`` teacher probabilities at T, ``p = softmax(z_s / T)``.

* instance level (``kd``): ``T² · mean_i Σ_c q_ic (log q_ic − log p_ic)``
* class level (``cc``): ``‖qᵀq − pᵀp‖²_F / C`` (C x C class-correlation Gram matrices)
* batch level (``bc``): ``‖q qᵀ − p pᵀ‖²_F / B`` (B x B sample-correlation Gram matrices)

Confidence masks (teacher at T = 1 on the weak image, ``np.percentile(·, 50)`` = linear-interpolated
median): sample mask ``max_c q¹_ic ≤ median_i``; class mask ``Σ_i q¹_ic ≤ median_c``.

How the official code applies a mask, and the switch that reproduces it (``mask_mode``):

* ``"as_coded"`` (official): the loss functions are called with ``reduce=True`` (the
  ``reduce=False`` lines are commented out), so ``(loss * mask).mean()`` multiplies the *scalar*
  batch loss by the fraction of masked-in samples (classes for ``cc``): ≈ 0.5 · loss. No sample is
  actually excluded.
* ``"per_sample"``: what the commented ``reduce=False`` would compute: the per-sample KD vector
  times the mask, averaged over the batch; for ``cc``/``bc`` the un-reduced matrix ``ΔG² / C``
  (``ΔB² / B``) times the mask broadcast over its last dimension (columns), averaged over all
  entries (note: a different scale from ``as_coded``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from .kd import plogp

MASK_MODES = ("as_coded", "per_sample")
#: the official temperature set, in the order of ``KD_ours.forward_train`` (cfg.KD.TEMPERATURE = 4 first)
MLKD_TEMPERATURES = (4.0, 3.0, 5.0, 2.0, 6.0)
#: temperatures at which the official "strong" KD (and cc) sums reuse the WEAK image
MLKD_STRONG_REUSES_WEAK_AT = (2.0, 6.0)


def _check_mask_mode(mask_mode: str) -> None:
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")


def mlkd_confidence_masks(teacher_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sample_mask [B], class_mask [C])`` (bool) from the teacher's T = 1 probabilities.

    ``sample_mask_i = max_c q_ic ≤ median_i(max_c q_ic)``; ``class_mask_c = Σ_i q_ic ≤
    median_c(Σ_i q_ic)``, medians by linear interpolation as ``np.percentile(x, 50)``
    (``KD_ours.forward_train``). Low-confidence samples / classes are the ones kept.
    """
    q = teacher_probs.detach().float()
    conf = q.max(dim=1).values
    sample_mask = conf <= torch.quantile(conf, 0.5)
    class_conf = q.sum(dim=0)
    class_mask = class_conf <= torch.quantile(class_conf, 0.5)
    return sample_mask, class_mask


def kd_per_sample(student_logits: torch.Tensor, teacher_probs: torch.Tensor, *,
                  temperature: float = 4.0) -> torch.Tensor:
    """``T² · Σ_c q_c (log q_c − log p_c)`` per sample (B,), fp32 (``kl_div(...).sum(1)``)."""
    t = float(temperature)
    q = teacher_probs.float()
    log_p = F.log_softmax(student_logits.float() / t, dim=1)
    return (plogp(q) - q * log_p).sum(dim=1) * (t * t)


def class_correlation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, *,
                           temperature: float = 4.0, reduce: bool = True) -> torch.Tensor:
    """MLKD class-level loss ``Σ_jk (qᵀq − pᵀp)²_jk / C`` (``cc_loss``); ``reduce=False`` returns the
    C x C matrix ``(qᵀq − pᵀp)² / C``. ``p = softmax(z_s / T)``, ``q`` given."""
    c = student_logits.shape[1]
    p = F.softmax(student_logits.float() / float(temperature), dim=1)
    q = teacher_probs.float()
    diff = (q.t() @ q - p.t() @ p) ** 2 / c
    return diff.sum() if reduce else diff


def batch_correlation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, *,
                           temperature: float = 4.0, reduce: bool = True) -> torch.Tensor:
    """MLKD batch-level loss ``Σ_ij (q qᵀ − p pᵀ)²_ij / B`` (``bc_loss``); ``reduce=False``
    returns the B x B matrix. ``p = softmax(z_s / T)``, ``q`` given.

    Angular-KD's ``MLKD_div.bc_loss`` applies a second softmax to the ensemble probabilities
    (``softmax(q_T / T)``, the inherited function not adapted); a caller reproducing it passes
    those as ``teacher_probs``.
    """
    b = student_logits.shape[0]
    p = F.softmax(student_logits.float() / float(temperature), dim=1)
    q = teacher_probs.float()
    diff = (q @ q.t() - p @ p.t()) ** 2 / b
    return diff.sum() if reduce else diff


def masked_kd_loss(student_logits, teacher_probs, mask, *, temperature: float = 4.0,
                   mask_mode: str = "as_coded") -> torch.Tensor:
    """``(kd_loss(...) * mask).mean()`` of the official code (see the module docstring)."""
    _check_mask_mode(mask_mode)
    per = kd_per_sample(student_logits, teacher_probs, temperature=temperature)
    m = mask.to(per.dtype)
    if mask_mode == "as_coded":
        return per.mean() * m.mean()
    return (per * m).mean()


def _masked_correlation(loss, student_logits, teacher_probs, mask, temperature: float,
                        mask_mode: str) -> torch.Tensor:
    _check_mask_mode(mask_mode)
    m = mask.float()
    if mask_mode == "as_coded":
        return loss(student_logits, teacher_probs, temperature=temperature) * m.mean()
    return (loss(student_logits, teacher_probs, temperature=temperature, reduce=False)
            * m).mean()


def masked_cc_loss(student_logits, teacher_probs, class_mask, *, temperature: float = 4.0,
                   mask_mode: str = "as_coded") -> torch.Tensor:
    """``(cc_loss(...) * class_mask).mean()`` of the official code."""
    return _masked_correlation(class_correlation_loss, student_logits, teacher_probs,
                               class_mask, temperature, mask_mode)


def masked_bc_loss(student_logits, teacher_probs, mask, *, temperature: float = 4.0,
                   mask_mode: str = "as_coded") -> torch.Tensor:
    """``(bc_loss(...) * mask).mean()`` of the official code."""
    return _masked_correlation(batch_correlation_loss, student_logits, teacher_probs, mask,
                               temperature, mask_mode)


def mlkd_loss_terms(student_weak: torch.Tensor, student_strong: torch.Tensor,
                    teacher_weak: Mapping[float, torch.Tensor],
                    teacher_strong: Mapping[float, torch.Tensor],
                    sample_mask: torch.Tensor, class_mask: torch.Tensor, *,
                    temperatures: Sequence[float] = MLKD_TEMPERATURES,
                    strong_reuses_weak_at: Sequence[float] = MLKD_STRONG_REUSES_WEAK_AT,
                    kd_weight: float = 0.9, mask_mode: str = "as_coded",
                    strong_relations: bool = False,
                    bc_teacher_weak: Mapping[float, torch.Tensor] | None = None,
                    bc_teacher_strong: Mapping[float, torch.Tensor] | None = None,
                    ) -> dict[str, torch.Tensor]:
    """The distillation terms of ``KD_ours.forward_train`` (CE is the caller's), each already
    multiplied by ``kd_weight`` (cfg.KD.LOSS.KD_WEIGHT, applied to every temperature's term).

    ``teacher_weak[T]`` / ``teacher_strong[T]``: teacher probabilities at T on the weak / strong
    view. With S = ``temperatures`` and W = ``strong_reuses_weak_at`` ⊆ S::

        kd_weak   = w Σ_{T∈S}   masked_kd(z_weak,   q_weak[T],   T, sample_mask)
        kd_strong = w Σ_{T∈S\\W} kd(z_strong, q_strong[T], T)            (no mask)
                  + w Σ_{T∈W}   kd(z_weak,   q_weak[T],   T)            (as coded: the weak image again)
        cc        = w Σ_{T∈S}   masked_cc(z_weak, q_weak[T], T, class_mask)
        bc        = w Σ_{T∈S}   masked_bc(z_weak, q_weak[T], T, sample_mask)

    The official code also computes ``cc_strong`` (like ``kd_strong``, unmasked cc) and
    ``bc_strong`` (bc on the strong image at every T in S, with the weak image's sample mask) but
    does NOT add them to the loss; ``strong_relations=True`` returns them too (as extra terms).
    ``bc_teacher_*`` optionally replace the teacher probabilities used by the bc terms (Angular-KD's
    double softmax, see :func:`batch_correlation_loss`).
    """
    temps = [float(t) for t in temperatures]
    reuse = {float(t) for t in strong_reuses_weak_at}
    if not reuse <= set(temps):
        raise ValueError(f"strong_reuses_weak_at {sorted(reuse)} must be a subset of the "
                         f"temperatures {temps}")
    bc_w = teacher_weak if bc_teacher_weak is None else bc_teacher_weak
    bc_s = teacher_strong if bc_teacher_strong is None else bc_teacher_strong
    w = float(kd_weight)

    def total(parts):
        return w * torch.stack(parts).sum()

    out = {
        "kd_weak": total([masked_kd_loss(student_weak, teacher_weak[t], sample_mask,
                                         temperature=t, mask_mode=mask_mode) for t in temps]),
        "kd_strong": total([
            kd_per_sample(student_weak, teacher_weak[t], temperature=t).mean() if t in reuse
            else kd_per_sample(student_strong, teacher_strong[t], temperature=t).mean()
            for t in temps]),
        "cc": total([masked_cc_loss(student_weak, teacher_weak[t], class_mask, temperature=t,
                                    mask_mode=mask_mode) for t in temps]),
        "bc": total([masked_bc_loss(student_weak, bc_w[t], sample_mask, temperature=t,
                                    mask_mode=mask_mode) for t in temps]),
    }
    if strong_relations:
        out["cc_strong"] = total([
            class_correlation_loss(student_weak, teacher_weak[t], temperature=t) if t in reuse
            else class_correlation_loss(student_strong, teacher_strong[t], temperature=t)
            for t in temps])
        out["bc_strong"] = total([masked_bc_loss(student_strong, bc_s[t], sample_mask,
                                                 temperature=t, mask_mode=mask_mode)
                                  for t in temps])
    return out
