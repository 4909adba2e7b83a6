"""Accuracy and evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def topk_hits(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the top-k logits, for each k, as device tensors
    (int64): adding them up needs no read back to the host."""
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hits = pred.eq(target.view(-1, 1))
    return [hits[:, : min(k, kmax)].any(dim=1).sum() for k in ks]


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, autocast=None) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean CE loss of ``model`` over ``loader`` (eval mode).
    The sums stay on the device until the end (one read back)."""
    was_training = model.training
    model.eval()
    n = 0
    sums = None
    for batch in loader:
        if autocast is not None:
            with autocast():
                logits, _ = model(batch.x)
        else:
            logits, _ = model(batch.x)
        logits = logits.float()
        a1, a5 = topk_hits(logits, batch.y)
        # float64: the same additions as the Python floats of a host-side sum
        step = torch.stack([F.cross_entropy(logits, batch.y, reduction="sum").double(),
                            a1.double(), a5.double()])
        sums = step if sums is None else sums + step
        n += batch.y.numel()
    model.train(was_training)
    loss, c1, c5 = sums.tolist()
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n}
