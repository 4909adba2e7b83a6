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
