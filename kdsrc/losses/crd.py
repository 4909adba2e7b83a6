"""Contrastive representation distillation (mdistiller ``mdistiller/distillers/CRD.py``, the same
maths as RepDistiller ``crd/criterion.py`` and ``crd/memory.py``).

Pure pieces; the memory banks, the embeddings, the normalisation constants Z and the negative
sampling are state and live in :class:`kdsrc.distillers.crd.ContrastHead`. One CRD term is::

    v_s = l2norm(W_s f_s + b_s),  v_t = l2norm(W_t f_t + b_t)          (128-d embeddings)
    s_s(i, j) = exp(<M_t[j], v_s,i> / τ) / Z_s     student anchor vs teacher memory
    s_t(i, j) = exp(<M_s[j], v_t,i> / τ) / Z_t     teacher anchor vs student memory
    L_CRD = nce_loss(s_s) + nce_loss(s_t)

with column 0 the positive (the sample itself in "exact" mode) and columns 1..K the negatives.
"""

from __future__ import annotations

import torch


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """``x / ‖x‖₂`` over dim 1, as the reference's ``Normalize(2)`` (no epsilon)."""
    return x / x.pow(2).sum(dim=1, keepdim=True).sqrt()


def contrast_scores(anchors: torch.Tensor, keys: torch.Tensor, *,
                    temperature: float = 0.07) -> torch.Tensor:
    """Unnormalised NCE scores ``exp(<keys[i, j], anchors[i]> / τ)``, shape ``B x (K+1)``.

    ``anchors``: ``B x d`` embeddings; ``keys``: ``B x (K+1) x d`` memory rows (positive first).
    The reference divides by the normalisation constant Z afterwards (``ContrastMemory.forward``).
    """
    dots = torch.bmm(keys.float(), anchors.float().unsqueeze(2)).squeeze(2)
    return torch.exp(dots / float(temperature))


def nce_loss(scores: torch.Tensor, *, num_data: int, eps: float = 1e-7) -> torch.Tensor:
    """NCE loss of one side (reference ``ContrastLoss``), batch mean.

    ``scores``: ``B x (K+1)`` Z-normalised scores, positive in column 0. With the uniform noise
    distribution ``P_n = 1/N`` (N = ``num_data``) and ``m = K``::

        h(x) = x / (x + m·P_n + eps)
        L = −(1/B) Σ_i [ log h(s_i0) + Σ_{j≥1} log(m·P_n / (s_ij + m·P_n + eps)) ]

    (the negative term is the reference's ``log(1 − h)`` written as it computes it).
    """
    x = scores.float()
    m = x.shape[1] - 1
    mpn = m / float(num_data)
    log_pos = torch.log(x[:, 0] / (x[:, 0] + mpn + eps))
    log_neg = torch.log(mpn / (x[:, 1:] + mpn + eps))
    return -(log_pos.sum() + log_neg.sum()) / x.shape[0]


def memory_update(rows: torch.Tensor, values: torch.Tensor, *, momentum: float = 0.5
                  ) -> torch.Tensor:
    """New memory rows ``l2norm(momentum·rows + (1 − momentum)·values)`` (reference update)."""
    return l2_normalize(rows.float() * momentum + values.float() * (1.0 - momentum))
