"""TeKAP teacher-knowledge perturbation (mdimtiazh/TeKAP ``distiller_zoo/Ours_TeKAP_L.py`` and
``crd/criterion.py``; the re-implementation in june6423/Angular-KD ``mdistiller/distillers/CRD.py``,
``randomize``).

A perturbed ("synthetic") teacher is ``keep·x + noise_scale·ε`` with ``ε ~ N(0, I)`` drawn fresh
every call, for teacher logits or teacher pooled features:

=================  ======================  ===========================================
recipe             logits                  pooled feature
=================  ======================  ===========================================
official TeKAP     0.9·z + 0.1·ε (3 ×)     0.9·f + 0.1·(0.1·ε) = 0.9·f + 0.01·ε (1 ×)
Angular-KD repo    0.9·z + 0.1·ε (3 ×)     0.9·f + 0.1·ε (3 ×)
=================  ======================  ===========================================
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .kd import kd_loss_from_probs


def perturb(x: torch.Tensor, *, keep: float = 0.9, noise_scale: float = 0.1,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """``keep·x + noise_scale·ε``, ``ε ~ N(0, I)`` of x's shape (TeKAP's synthetic teacher).

    Drawn from ``generator`` or, by default, torch's global RNG on x's device. The result is in
    fp32; gradients (if any) flow to ``x`` scaled by ``keep``.
    """
    x = x.float()
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return keep * x + noise_scale * eps


def perturbed_probs(teacher_probs: torch.Tensor, *, temperature: float = 4.0, keep: float = 0.9,
                    noise_scale: float = 0.1, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """Probabilities of a logit-perturbed teacher, computed from the teacher's probabilities.

    ``softmax(keep·log q + noise_scale·ε / T)`` with ``q`` the teacher's probabilities at T.
    For ``q = softmax(z/T)`` this is exactly the reference's ``softmax((keep·z + noise_scale·ε)/T)``
    because ``T·log q = z − T·logsumexp(z/T)`` and softmax ignores a per-row constant (the same
    holds for an unnormalised ensemble ``q``). Working from ``q`` keeps the distiller on
    ``TeacherOutputs.probs`` so that ensembles and teacher caches plug in unchanged.
    """
    t = float(temperature)
    log_q = teacher_probs.float().clamp_min(torch.finfo(torch.float32).tiny).log()
    eps = torch.randn(log_q.shape, generator=generator, device=log_q.device, dtype=log_q.dtype)
    return F.softmax(keep * log_q + (noise_scale / t) * eps, dim=1)


def tekap_logit_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor,
                     noisy_probs: Sequence[torch.Tensor], *, temperature: float = 4.0,
                     noisy_weight: float = 0.8) -> torch.Tensor:
    """TeKAP logit loss ``T²·KL(q ‖ p_s) + noisy_weight · Σ_k T²·KL(q̃_k ‖ p_s)``.

    ``q``: the clean teacher probabilities at T; ``noisy_probs``: the perturbed teachers'
    probabilities at T (from :func:`perturbed_probs`); ``p_s = softmax(z_s/T)``. Each KL is summed
    over classes and averaged over the batch, as ``DistillKL`` in ``Ours_TeKAP_L.py`` (which has
    three perturbed teachers and ``noisy_weight`` 0.8).
    """
    loss = kd_loss_from_probs(student_logits, teacher_probs, temperature=temperature)
    for q in noisy_probs:
        loss = loss + noisy_weight * kd_loss_from_probs(student_logits, q, temperature=temperature)
    return loss
