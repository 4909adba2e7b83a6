"""Decoupled knowledge distillation (mdistiller ``mdistiller/distillers/DKD.py``).

The teacher side takes target *probabilities* at temperature T rather than logits, so that the
same function serves a plain teacher (``q = softmax(z_t / T)``) and a probability ensemble (the
Angular-KD views, whose ``q`` may not sum to one — Angular-KD's own ``CRD.py`` ``dkd_loss`` does
the same). For ``q = softmax(z_t / T)`` the result equals mdistiller's to rounding:

* TCKD's binary teacher distribution ``[q_gt, Σ_{c≠gt} q_c]`` is the reference's ``cat_mask``;
* NCKD's teacher distribution ``softmax(log q − 1000·gt)`` equals the reference's
  ``softmax(z_t/T − 1000·gt)`` because ``log q = z_t/T − logsumexp(z_t/T)`` and softmax ignores a
  per-row constant.

Numerics (same values, no reference quirk changed): the student's binary log-probabilities are
computed as log-sum-exps of ``log_softmax`` instead of ``torch.log`` of summed probabilities
(the reference takes ``log`` without an epsilon and gives ``-inf`` when ``p_gt`` underflows),
``q`` is clamped at the smallest normal float before its log, and the teacher's NCKD target is
kept in log space, so that the gradient w.r.t. ``q`` (Angular-KD's jointly trained views) has no
0·log 0 NaN at the masked target class. Everything runs in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: the reference masks the target class by subtracting 1000 (not -inf) before the softmax
GT_MASK_MAGNITUDE = 1000.0


def _kl_rows(q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``Σ_c q_c (log q_c − log p_c)`` per row, with ``0·log 0 = 0`` and a finite gradient at
    ``q_c = 0`` (``xlogy(q, q)`` would give NaN there when q carries gradients, as Angular-KD's
    jointly trained views do)."""
    pos = q > 0
    log_q = torch.where(pos, q, torch.ones_like(q)).log()
    return torch.where(pos, q * (log_q - log_p), torch.zeros_like(q)).sum(dim=1)


def dkd_parts(student_logits: torch.Tensor, teacher_probs: torch.Tensor, target: torch.Tensor, *,
              temperature: float = 4.0, reduction: str = "mean"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(TCKD, NCKD)``, each multiplied by ``T²`` as in the reference.

    With ``g = onehot(target)``, ``p = softmax(z_s/T)`` and ``q`` the teacher probabilities::

        b_s = [p_gt, Σ_{c≠gt} p_c]            b_t = [q_gt, Σ_{c≠gt} q_c]
        TCKD_i = T² · KL(b_t,i ‖ b_s,i)
        p̂ = softmax(z_s/T − 1000·g)          q̂ = softmax(log q − 1000·g)
        NCKD_i = T² · KL(q̂_i ‖ p̂_i)

    ``reduction="mean"`` averages over the batch (the reference's ``size_average=False`` sum
    divided by B); ``"none"`` returns per-sample values. For ``q = softmax(z_t/T)`` classical KD
    decomposes per sample as ``KD_i = TCKD_i + (1 − q_gt,i) · NCKD_i`` (DKD paper, Eq. 4).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    t = float(temperature)
    z = student_logits.float() / t
    q = teacher_probs.float()
    gt = torch.zeros_like(z, dtype=torch.bool).scatter_(1, target.reshape(-1, 1), True)

    # TCKD: binary (target, non-target) distributions
    log_p = F.log_softmax(z, dim=1)
    log_b_s = torch.stack([log_p.masked_fill(~gt, float("-inf")).logsumexp(dim=1),
                           log_p.masked_fill(gt, float("-inf")).logsumexp(dim=1)], dim=1)
    b_t = torch.stack([(q * gt).sum(dim=1), (q * ~gt).sum(dim=1)], dim=1)
    tckd = _kl_rows(b_t, log_b_s) * (t * t)

    # NCKD: distributions over the non-target classes
    mask = gt.float() * GT_MASK_MAGNITUDE
    log_p_hat = F.log_softmax(z - mask, dim=1)
    log_q = q.clamp_min(torch.finfo(torch.float32).tiny).log()
    log_q_hat = F.log_softmax(log_q - mask, dim=1)  # finite everywhere (≈ −1000 at gt)
    nckd = (log_q_hat.exp() * (log_q_hat - log_p_hat)).sum(dim=1) * (t * t)

    if reduction == "mean":
        return tckd.mean(), nckd.mean()
    return tckd, nckd


def dkd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, target: torch.Tensor, *,
             alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> torch.Tensor:
    """``α·TCKD + β·NCKD`` (batch mean, ``T²`` included); see :func:`dkd_parts`.

    Defaults are mdistiller's ``CFG.DKD`` (α 1, β 8, T 4); the warm-up factor
    ``min(epoch/20, 1)`` belongs to the distiller, not to this function.
    """
    tckd, nckd = dkd_parts(student_logits, teacher_probs, target, temperature=temperature)
    return alpha * tckd + beta * nckd
