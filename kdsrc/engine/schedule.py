"""Learning-rate schedule of the reference recipe (mdistiller ``adjust_learning_rate``)."""

from __future__ import annotations


def learning_rate(epoch: int, solver: dict) -> float:
    """LR for the 1-based ``epoch``: step decay, with an optional linear warm-up.

    ``lr · rate^(number of decay epochs s with epoch > s)`` — 0.05 for epochs 1–150, 0.005 for
    151–180, ... in the reference. With ``warmup_epochs = w > 0`` the first w epochs are scaled
    by ``epoch / w`` (mdistiller has no warm-up; it is off by default).
    """
    lr = solver["lr"] * solver["lr_decay_rate"] ** sum(epoch > s for s in solver["lr_decay_epochs"])
    w = solver.get("warmup_epochs", 0)
    if w and epoch <= w:
        lr *= epoch / w
    return lr
