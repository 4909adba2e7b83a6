"""LDRLD, "Local Dense Logit Relations for Enhanced Knowledge Distillation" (ICCV 2025), as coded.

Source: yema-web/LDRLD ``distiller_zoo/LDRLD.py`` (``ADW``, ``calculate_recursion_combinations``,
``selective_softmax_loss``, ``LDRLD.forward``).

With ``I_i`` = the top-k classes of sample i by a ranking score (the official code: the STUDENT
logits, ``student_logits.topk(k)``), ordered by rank r = 0..k−1:

* groups: the 21 rank pairs (a, b), a < b (``itertools.combinations(range(k), 2)`` order), plus
  the full top-k tuple -> ``G = C(k, 2) + 1`` groups (22 for k = 7);
* for a group with class set S: teacher and student distributions restricted to S,
  ``softmax(z/T − 1000·[c ∉ S])``, and ``KL_g = T²/B Σ_i KL(p_t,i^S ‖ p_s,i^S)``;
* ADW weight of a pair: ``w(a, b) = 2 / (1.5 + |a − b|) · exp(−γ ((a+1) + (b+1)))``, γ = 0.05
  (hard-coded in the official code); the full group has weight 1 (for k = 2, where the full
  group is itself a pair, the official ``len == 2`` test gives it ``w(0, 1)``; reproduced);
* ``L_LDR = (Σ_pairs w·KL_pair + KL_full) / G``;
* RNTK (remaining non-target knowledge): the same KL over the classes NOT in the top-k set.

The teacher side is taken as probabilities at T (``TeacherOutputs.probs(T)``): restricting
``softmax(z_t/T − 1000·mask)`` to S equals ``q_c / Σ_{c'∈S} q_c'`` on S and 0 elsewhere (the
``e^-1000`` leak underflows to 0 in fp32), so both are the same numbers; it also accepts
probability vectors that do not sum to one (view ensembles). The student side keeps the official
``−1000`` masking before ``log_softmax``. All groups are computed at once (B x G x C tensors).
"""

from __future__ import annotations

import math
import functools
from itertools import combinations

import torch
import torch.nn.functional as F

from .kd import plogp

#: the official masking constant (``− 1000.0 * mask``)
MASK_VALUE = 1000.0


def ldrld_groups(k: int) -> list[tuple[int, ...]]:
    """The rank groups of the official code: ``combinations(range(k), 2)`` then ``range(k)``."""
    return list(combinations(range(k), 2)) + [tuple(range(k))]


def adw_weight(a: int, b: int, *, gamma: float = 0.05, scale: float = 2.0, offset: float = 1.5) -> float:
    """ADW pair weight ``scale / (offset + |a − b|) · exp(−γ ((a+1) + (b+1)))`` (official ``ADW``:
    IRW part ``1/(1.5 + |rank gap|)``, ERD part ``exp(−γ · sum of 1-based ranks)``, a = 2)."""
    t, tp = a + 1, b + 1
    return 1.0 / (offset + abs(t - tp)) * scale * math.exp(-gamma * (t + tp))


def ldrld_group_weights(k: int, *, gamma: float = 0.05) -> torch.Tensor:
    """float64 weights of :func:`ldrld_groups` (pairs: ADW; the full group: 1.0).

    As coded, a group is weighted by ADW when it has two members (``len(comb) == 2``), so for
    k = 2 the full group -- the pair (0, 1) again -- also gets ``w(0, 1)``, not 1."""
    return torch.tensor([adw_weight(g[0], g[1], gamma=gamma) if len(g) == 2 else 1.0
                         for g in ldrld_groups(k)], dtype=torch.float64)


@functools.lru_cache(maxsize=None)
def _group_tables(k: int, gamma: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G x k membership of each rank in each group, G group weights)``, float32 on
    ``device``, made once: a step copies no constant from the host (which a CUDA graph cannot
    record, and which waits for the host on every step)."""
    groups = ldrld_groups(k)
    by_rank = torch.zeros(len(groups), k, dtype=torch.float32)
    for i, grp in enumerate(groups):
        by_rank[i, list(grp)] = 1.0
    w = ldrld_group_weights(k, gamma=gamma).to(torch.float32)
    return by_rank.to(device), w.to(device)


def _restricted_kl(log_p_s: torch.Tensor, q: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """``Σ_c q^S_c (log q^S_c − log_p_s_c)`` over the last dim, ``q^S = q·member / Σ q·member``."""
    qm = q * member
    qs = qm / qm.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(qm.dtype).tiny)
    return (plogp(qs) - qs * log_p_s).sum(dim=-1)


def ldrld_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, *,
               temperature: float = 4.0, k: int = 7, gamma: float = 0.05,
               rank_scores: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_LDR, RNTK)`` of the official ``selective_softmax_loss`` (unweighted by α, β).

    ``student_logits`` B x C; ``teacher_probs`` B x C teacher probabilities at ``temperature``;
    ``rank_scores`` (default: the student logits, as coded) B x C scores whose top-k define the
    groups (pass teacher probabilities for a teacher ranking). Needs ``1 <= k < C``.
    """
    b, c = student_logits.shape
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k >= c:
        raise ValueError(f"k must be an integer with 1 <= k < number of classes ({c}), got {k!r}")
    t = float(temperature)
    z = student_logits.float() / t
    q = teacher_probs.float()
    scores = student_logits if rank_scores is None else rank_scores
    top = scores.detach().topk(k, dim=1, largest=True, sorted=True).indices         # B x k

    by_rank, w = _group_tables(k, gamma, z.device)
    g = by_rank.shape[0]
    onehot = F.one_hot(top, c).float()                                              # B x k x C
    member = torch.einsum("gr,brc->bgc", by_rank, onehot)                           # B x G x C, 0/1

    log_p_s = F.log_softmax(z[:, None, :] - MASK_VALUE * (1.0 - member), dim=-1)   # B x G x C
    kl = _restricted_kl(log_p_s, q[:, None, :], member)                            # B x G
    per_group = kl.mean(dim=0) * (t * t)                                            # G
    l_ldr = (w * per_group).sum() / g

    rest = 1.0 - member[:, -1, :]                                                   # B x C
    log_p_rest = F.log_softmax(z - MASK_VALUE * member[:, -1, :], dim=-1)
    rntk = _restricted_kl(log_p_rest, q, rest).mean() * (t * t)
    return l_ldr, rntk
