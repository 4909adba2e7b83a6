"""Accuracy and evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[int]:
    """Number of samples whose label is among the top-k logits, for each k."""
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hits = pred.eq(target.view(-1, 1))
    return [int(hits[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, autocast=None) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean CE loss of ``model`` over ``loader`` (eval mode)."""
    was_training = model.training
    model.eval()
    n = c1 = c5 = 0
    loss = 0.0
    for batch in loader:
        if autocast is not None:
            with autocast():
                logits, _ = model(batch.x)
        else:
            logits, _ = model(batch.x)
        logits = logits.float()
        loss += float(F.cross_entropy(logits, batch.y, reduction="sum"))
        a1, a5 = topk_correct(logits, batch.y)
        c1 += a1
        c5 += a5
        n += batch.y.numel()
    model.train(was_training)
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n}
