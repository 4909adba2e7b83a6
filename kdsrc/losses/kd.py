"""Hinton knowledge distillation (mdistiller ``distillers/KD.py``, RepDistiller ``DistillKL``)."""

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
            temperature: float = 4.0) -> torch.Tensor:
    """KD loss ``T² · mean_i Σ_c p_t,c (log p_t,c − log p_s,c)``.

    ``p_t = softmax(z_t / T)``, ``log p_s = log_softmax(z_s / T)``; summed over classes and
    averaged over the batch (``kl_div(reduction="none").sum(1).mean()`` in mdistiller). Computed
    in fp32 whatever the input dtype, because bf16 log-probabilities lose the small terms.
    """
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    return kl.mean() * (t * t)


def plogp(q: torch.Tensor) -> torch.Tensor:
    """``q·log q`` with 0·log 0 = 0 and a finite gradient at q = 0.

    ``torch.special.xlogy(q, q)`` has the right value but a NaN gradient where q is exactly 0
    and carries gradients (the Angular-KD ensemble does); clamping inside the log keeps the
    gradient finite and the value unchanged.
    """
    return q * torch.log(q.clamp_min(torch.finfo(q.dtype).tiny))


def kd_loss_from_probs(student_logits: torch.Tensor, teacher_probs: torch.Tensor, *,
                       temperature: float = 4.0) -> torch.Tensor:
    """KD towards given target probabilities: ``T² · mean_i Σ_c q_c (log q_c − log p_s,c)``.

    ``q`` need not sum to one: the official Angular-KD ensemble with L2-normalised weights sums to
    ≈2.44 and is used as is (its gradient is KD towards q/Σq scaled by Σq). Zero entries of q
    contribute zero (0·log 0 = 0, see :func:`plogp`).
    """
    t = float(temperature)
    q = teacher_probs.float()
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    kl = (plogp(q) - q * log_p_s).sum(dim=1)
    return kl.mean() * (t * t)
