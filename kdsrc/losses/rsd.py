"""RSD redundancy-suppression loss (Zhang et al., ICCV 2025; spacewanderx/RSD ``distillers/rsd.py``).

A Barlow-Twins objective between the projected student feature and the teacher feature: both are
standardised per dimension over the batch, their cross-correlation should be the identity.
"""

from __future__ import annotations

import torch


def batch_standardize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``(x − mean_batch) / (std_batch + eps)`` per dimension, std biased (``unbiased=False``),
    eps added to the std (not the variance), as the reference ``Normalize``."""
    x = x.float()
    return (x - x.mean(dim=0)) / (x.std(dim=0, unbiased=False) + eps)


def rsd_loss(student_proj: torch.Tensor, teacher_feat: torch.Tensor, *, kappa: float = 0.01,
             eps: float = 1e-5) -> torch.Tensor:
    """``L = Σ_i (C_ii − 1)² + κ · Σ_{i≠j} C_ij²`` with ``C = ẑ_tᵀ ẑ_s / B``.

    ``student_proj`` (B x d_t) is the student's pooled feature after the RSD projector,
    ``teacher_feat`` (B x d_t) the teacher's pooled feature; ``ẑ`` = :func:`batch_standardize`.
    The diagonal term maximises the per-dimension correlation (invariance), the off-diagonal one
    suppresses redundancy between dimensions. Computed in float32; summed, not averaged.
    """
    if student_proj.dim() != 2 or student_proj.shape != teacher_feat.shape:
        raise ValueError(f"rsd_loss needs two B x D features of one shape, got "
                         f"{tuple(student_proj.shape)} and {tuple(teacher_feat.shape)}")
    b = student_proj.shape[0]
    z_s = batch_standardize(student_proj, eps)
    z_t = batch_standardize(teacher_feat, eps)
    c = z_t.t() @ z_s / b
    diag = torch.diagonal(c)
    on = (diag - 1).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + float(kappa) * off
