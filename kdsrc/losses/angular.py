"""Angular-KD's angular losses and view ensemble (june6423/Angular-KD, NeurIPS 2025).

Source: ``mdistiller/models/diverse_loss.py`` (the four losses) and
``mdistiller/models/teacher_aug.py`` (``weight_sum_logit``, ``weight_sum_feature``) at HEAD
``b8c2a08``; re-derived, not copied. Shapes: ``B`` batch, ``N`` views, ``D`` feature size, ``C``
classes. Views are stacked ``[B, N, ·]`` (view axis = dim 1, as the reference stacks them); a
list of ``N`` tensors ``[B, ·]`` is accepted too. Everything is computed in float32.

``angles`` selects how the inter-angle losses measure angles:

* ``"official"`` — as the reference code does it. The feature inter-angle *diversity* term
  normalises the stacked view tensor along **dim 1, the view axis** (``F.normalize(v, dim=1)``),
  so its "cosines" (and its margin gate) are not cosines between view vectors; the logit losses
  use **raw dot products of probability vectors** ``⟨σ_T(z_i), σ_T(z_t)⟩`` (a dot product of two
  distributions reaches the ``1 − m = 0.8`` threshold only when both are peaked).
* ``"exact"`` — what the method describes: true cosines, i.e. view features normalised along the
  feature axis, probability vectors L2-normalised before the dot products.

The feature inter-angle *pull* term already uses true cosines in the reference, and both
intra-angle losses use true cosines of residual directions, so for those ``angles`` changes
nothing (the keyword is accepted for a uniform interface).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

ANGLES = ("official", "exact")
ENSEMBLE_NORMS = ("l1", "l2")


def _stack(views: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(views, torch.Tensor):
        if views.dim() != 3:
            raise ValueError(f"views must be B x N x K, got shape {tuple(views.shape)}")
        return views.float()
    return torch.stack(list(views), dim=1).float()


def _check_angles(angles: str) -> None:
    if angles not in ANGLES:
        raise ValueError(f"angles must be one of {ANGLES}, got {angles!r}")


def _margin_pull(sim: torch.Tensor, num_views: int, margin: float, kappa: float) -> torch.Tensor:
    """InfoNCE over the batch with the positive similarity clipped to 1 inside the margin.

    ``sim`` is ``[B·N, B]``: row ``b·N + i`` (view i of sample b) against every teacher column.
    Positive entries (column b) with ``sim >= 1 − margin`` are replaced by the constant 1 (no
    gradient: the view is close enough); loss = ``CE(sim / κ, b) / N`` averaged over rows.
    """
    rows, batch = sim.shape
    labels = torch.arange(rows, device=sim.device) // num_views
    positive = labels[:, None] == torch.arange(batch, device=sim.device)[None, :]
    sim = torch.where(positive & (sim >= 1.0 - margin), torch.ones_like(sim), sim)
    return F.cross_entropy(sim / kappa, labels) / num_views


def _gated_pair_softplus(vecs: torch.Tensor, anchor: torch.Tensor, margin: float) -> torch.Tensor:
    """``Σ_{b∈gate} Σ_{i≠j} softplus(⟨vecs_bi, vecs_bj⟩) / (N(N−1)·B)``.

    gate = samples whose every view has ``⟨anchor_b, vecs_bi⟩ > 1 − margin``; the division is by
    the full batch size ``B``, not by the number of gated samples (as in the reference).
    """
    b, n, _ = vecs.shape
    sim_anchor = torch.einsum("bk,bnk->bn", anchor, vecs)
    gate = (sim_anchor.min(dim=1).values > 1.0 - margin).to(vecs.dtype)        # [B]
    gram = torch.matmul(vecs, vecs.transpose(1, 2))                            # [B, N, N]
    off = 1.0 - torch.eye(n, device=vecs.device, dtype=vecs.dtype)
    per_sample = (F.softplus(gram) * off).sum(dim=(1, 2))                      # [B]
    return (per_sample * gate).sum() / (n * (n - 1) * b)


def _pair_softplus_mean(residuals: torch.Tensor) -> torch.Tensor:
    """``Σ_{i≠j} softplus(M_ij) / (N(N−1))`` with ``M = mean_b r̂_b r̂_bᵀ`` (softplus after the mean)."""
    n = residuals.shape[1]
    r = F.normalize(residuals, p=2, dim=2)
    gram = torch.matmul(r, r.transpose(1, 2)).mean(dim=0)                      # [N, N]
    off = 1.0 - torch.eye(n, device=r.device, dtype=r.dtype)
    return (F.softplus(gram) * off).sum() / (n * (n - 1))


# -- feature losses -------------------------------------------------------------------------------
def feature_inter_pull(teacher_feat: torch.Tensor, view_feats, *, margin: float = 0.2,
                       kappa: float = 0.07) -> torch.Tensor:
    """Constraint part of the feature inter-angle loss (``Feature_inter_Loss``, first half).

    ``s_(b,i),c = ⟨v̂_bi, f̂_c⟩`` (unit vectors along the feature axis, true cosines in both
    ``angles`` modes); positives with ``s ≥ 1 − m`` are set to 1; ``L = mean CE(s/κ, b) / N``.
    Pulls each view towards its own teacher feature (and away from the other samples') until it
    is within the angular margin ``arccos(1 − m)``.
    """
    v = _stack(view_feats)
    b, n, d = v.shape
    v_hat = F.normalize(v, p=2, dim=2).reshape(b * n, d)
    f_hat = F.normalize(teacher_feat.float(), p=2, dim=1)
    return _margin_pull(v_hat @ f_hat.t(), n, margin, kappa)


def feature_inter_diversity(teacher_feat: torch.Tensor, view_feats, *, margin: float = 0.2,
                            angles: str = "official") -> torch.Tensor:
    """Diversity part of the feature inter-angle loss: gated softplus of pairwise view similarities.

    ``L = Σ_{b∈gate} Σ_{i≠j} softplus(⟨ṽ_bi, ṽ_bj⟩) / (N(N−1)B)``, gate = samples with
    ``min_i ⟨f̂_b, ṽ_bi⟩ > 1 − m``. ``angles="official"``: ``ṽ = v / ‖v_b,:,d‖`` normalised along
    the **view axis** (dim 1) as the reference does; ``"exact"``: ``ṽ = v / ‖v_bi‖`` (feature
    axis), so the terms are true cosines. Minimising it pushes the views apart.
    """
    _check_angles(angles)
    v = _stack(view_feats)
    v_tilde = F.normalize(v, p=2, dim=1 if angles == "official" else 2)
    f_hat = F.normalize(teacher_feat.float(), p=2, dim=1)
    return _gated_pair_softplus(v_tilde, f_hat, margin)


def feature_inter_loss(teacher_feat: torch.Tensor, view_feats, *, margin: float = 0.2,
                       kappa: float = 0.07, angles: str = "official") -> torch.Tensor:
    """Constrained feature inter-angle loss = :func:`feature_inter_pull` + :func:`feature_inter_diversity`.

    Reference: ``Feature_inter_Loss`` (margin 0.2, κ 0.07) in ``diverse_loss.py``.
    """
    return (feature_inter_pull(teacher_feat, view_feats, margin=margin, kappa=kappa)
            + feature_inter_diversity(teacher_feat, view_feats, margin=margin, angles=angles))


def feature_intra_loss(teacher_feat: torch.Tensor, view_feats, *, angles: str = "official"
                       ) -> torch.Tensor:
    """Feature intra-angle loss (``Feature_intra_Loss``).

    Residual directions ``r_bi = unit(f_b − v_bi)``; ``M_ij = mean_b ⟨r_bi, r_bj⟩``;
    ``L = Σ_{i≠j} softplus(M_ij) / (N(N−1))`` (softplus *after* the batch mean). Minimising it
    spreads the views evenly around the teacher feature (optimum: a regular simplex of residual
    directions, mean pairwise cosine −1/(N−1)). Same in both ``angles`` modes (true cosines).
    """
    _check_angles(angles)
    v = _stack(view_feats)
    return _pair_softplus_mean(teacher_feat.float()[:, None, :] - v)


# -- logit losses ---------------------------------------------------------------------------------
def _probs(teacher_logits, view_logits, temperature: float, angles: str):
    _check_angles(angles)
    z = _stack(view_logits)
    p = F.softmax(z / temperature, dim=2)                                       # [B, N, C]
    pt = F.softmax(teacher_logits.float() / temperature, dim=1)                 # [B, C]
    if angles == "exact":
        p, pt = F.normalize(p, p=2, dim=2), F.normalize(pt, p=2, dim=1)
    return p, pt


def logit_inter_loss(teacher_logits: torch.Tensor, view_logits, *, temperature: float = 4.0,
                     margin: float = 0.2, kappa: float = 0.07, angles: str = "official"
                     ) -> torch.Tensor:
    """Constrained logit inter-angle loss (``Logit_inter_Loss(T)``): pull + gated diversity.

    With ``p_bi = σ_T(z_bi)``, ``p_tb = σ_T(z_tb)`` (``"exact"``: both L2-normalised),
    ``s_(b,i),c = ⟨p_bi, p_tc⟩``; pull = ``mean CE(s'/κ, b) / N`` where positives with
    ``s ≥ 1 − m`` are set to 1; diversity = ``Σ_{b∈gate} Σ_{i≠j} softplus(⟨p_bi, p_bj⟩) /
    (N(N−1)B)`` with gate ``min_i ⟨p_tb, p_bi⟩ > 1 − m``. ``"official"`` uses raw dot products of
    probability vectors. Reference T = ``cfg.KD.TEMPERATURE`` (4 on CIFAR); margin 0.2 (0.1
    before commit 20a0c63).
    """
    p, pt = _probs(teacher_logits, view_logits, temperature, angles)
    b, n, c = p.shape
    pull = _margin_pull(p.reshape(b * n, c) @ pt.t(), n, margin, kappa)
    return pull + _gated_pair_softplus(p, pt, margin)


def logit_intra_loss(teacher_logits: torch.Tensor, view_logits, *, temperature: float = 4.0,
                     angles: str = "official") -> torch.Tensor:
    """Logit intra-angle loss (``Logit_intra_Loss(T)``).

    ``r_bi = unit(σ_T(z_tb) − σ_T(z_bi))``, ``M_ij = mean_b ⟨r_bi, r_bj⟩``,
    ``L = Σ_{i≠j} softplus(M_ij) / (N(N−1))``. The residuals are differences of the raw
    probability vectors and their directions are true cosines in the reference already, so
    ``angles`` does not change this loss.
    """
    _check_angles(angles)
    z = _stack(view_logits)
    p = F.softmax(z / temperature, dim=2)
    pt = F.softmax(teacher_logits.float() / temperature, dim=1)
    return _pair_softplus_mean(pt[:, None, :] - p)


def view_ce_loss(view_logits, target: torch.Tensor) -> torch.Tensor:
    """``Σ_i CE(z_i, y)``: cross-entropy of every view's classifier, summed over views (not
    averaged), as in ``TeacherEnsemble.forward`` (the reference multiplies it by 0.8)."""
    z = _stack(view_logits)
    b, n, c = z.shape
    return F.cross_entropy(z.reshape(b * n, c), target.repeat_interleave(n), reduction="sum") / b


# -- ensemble ------------------------------------------------------------------------------------
def ensemble_weights(num_views: int, *, view_weight: float = 0.8, teacher_weight: float = 1.0,
                     norm: str = "l2", device=None, dtype=torch.float32) -> torch.Tensor:
    """Weights ``[α]*N + [β]`` (views first, teacher last), normalised ``w / ‖w‖_p``.

    Reference ``weight_sum_logit``/``weight_sum_feature``: raw ``[0.8]*N + [1.0]`` and
    ``F.normalize(w, p)``. ``p = 2`` (HEAD): for N = 5 each view 0.3904, teacher 0.4880, sum
    2.44 — the ensemble target does not sum to one (KD towards it = KD towards the normalised
    target with weight ×2.44). ``p = 1`` (commits 3d3a12d..fe150ab): views 0.16, teacher 0.20.
    """
    if norm not in ENSEMBLE_NORMS:
        raise ValueError(f"norm must be one of {ENSEMBLE_NORMS}, got {norm!r}")
    w = torch.tensor([float(view_weight)] * int(num_views) + [float(teacher_weight)],
                     dtype=torch.float64)
    w = w / w.norm(p=1 if norm == "l1" else 2)
    return w.to(device=device, dtype=dtype)


def _check_weights(weights: torch.Tensor, n: int) -> torch.Tensor:
    if weights.shape != (n + 1,):
        raise ValueError(f"need {n + 1} ensemble weights (views, then teacher), got {tuple(weights.shape)}")
    return weights.float()


def ensemble_probs(teacher_logits: torch.Tensor, view_logits, *, weights: torch.Tensor,
                   temperature: float = 4.0) -> torch.Tensor:
    """``q = Σ_i α_i σ_τ(z_i) + β σ_τ(z_t)`` — the distillation target (``weight_sum_logit``).

    A probability vector only if the weights sum to one (``l1``); with ``l2`` weights it sums to
    ``Σw``. The reference forms it at τ = 4 hard-coded (``TeacherEnsemble.forward(temp=4)``)
    whatever the KD temperature, except on the MLKD path (one ensemble per MLKD temperature).
    """
    z = _stack(view_logits)
    w = _check_weights(weights, z.shape[1])
    p = F.softmax(z / temperature, dim=2)
    pt = F.softmax(teacher_logits.float() / temperature, dim=1)
    return torch.einsum("bnc,n->bc", p, w[:-1]) + w[-1] * pt


def ensemble_features(teacher_feat: torch.Tensor, view_feats, *, weights: torch.Tensor
                      ) -> torch.Tensor:
    """``f_ens = Σ_i α_i v_i + β f`` — replaces the teacher's ``pooled_feat`` (``weight_sum_feature``)."""
    v = _stack(view_feats)
    w = _check_weights(weights, v.shape[1])
    return torch.einsum("bnd,n->bd", v, w[:-1]) + w[-1] * teacher_feat.float()


# -- diagnostics ---------------------------------------------------------------------------------
def _angle_deg(cos: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


def pairwise_view_angles(view_feats) -> torch.Tensor:
    """Per-sample mean angle (degrees) between the ``N(N−1)/2`` pairs of views (true cosines): ``[B]``."""
    v = F.normalize(_stack(view_feats), p=2, dim=2)
    n = v.shape[1]
    iu = torch.triu_indices(n, n, offset=1, device=v.device)
    cos = torch.matmul(v, v.transpose(1, 2))[:, iu[0], iu[1]]
    return _angle_deg(cos).mean(dim=1)


def view_teacher_angles(teacher_feat: torch.Tensor, view_feats) -> torch.Tensor:
    """Per-sample mean angle (degrees) between each view and the teacher feature: ``[B]``."""
    v = F.normalize(_stack(view_feats), p=2, dim=2)
    f = F.normalize(teacher_feat.float(), p=2, dim=1)
    return _angle_deg(torch.einsum("bd,bnd->bn", f, v)).mean(dim=1)


def simplex_cosine(num_views: int) -> float:
    """Mean pairwise cosine of a regular simplex of ``N`` directions, ``−1/(N−1)``: the optimum
    of the intra-angle losses."""
    return -1.0 / (num_views - 1) if num_views > 1 else math.nan
