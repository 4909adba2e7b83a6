"""ReviewKD's hierarchical context loss (mdistiller ``mdistiller/distillers/ReviewKD.py``,
``hcl_loss``; the same in dvlab-research/ReviewKD)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def hcl_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor], *,
             pool_sizes: Sequence[int] = (4, 2, 1)) -> torch.Tensor:
    """Hierarchical context loss, summed over levels.

    For each pair ``(f_s, f_t)`` of equal shape ``B x C x H x W``::

        HCL = [ MSE(f_s, f_t) + Σ_{l ∈ (4, 2, 1), l < H} 2^{-k(l)} MSE(pool_l f_s, pool_l f_t) ]
              / (1 + Σ 2^{-k(l)})

    where ``pool_l`` is adaptive average pooling to ``l x l``, ``MSE`` the element mean, and
    ``k(l)`` counts the pooled levels used so far (1/2 for the first kept size, 1/4 for the next,
    ...; sizes ``l >= H`` are skipped without advancing k, as in the reference). Levels are
    zipped, so the lists must be aligned by the caller. Computed in fp32.
    """
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"hcl_loss: {len(student_feats)} student levels vs "
                         f"{len(teacher_feats)} teacher levels")
    total = None
    for fs, ft in zip(student_feats, teacher_feats):
        fs, ft = fs.float(), ft.float()
        if fs.shape != ft.shape:
            raise ValueError(f"hcl_loss: shape {tuple(fs.shape)} vs {tuple(ft.shape)}")
        h = fs.shape[2]
        loss = F.mse_loss(fs, ft)
        weight, norm = 1.0, 1.0
        for size in pool_sizes:
            if size >= h:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, (size, size)),
                                              F.adaptive_avg_pool2d(ft, (size, size)))
            norm += weight
        loss = loss / norm
        total = loss if total is None else total + loss
    if total is None:
        raise ValueError("hcl_loss: no feature levels")
    return total
