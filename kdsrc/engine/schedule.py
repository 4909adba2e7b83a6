"""Learning-rate schedule of the reference recipe (mdistiller ``adjust_learning_rate``)."""

from __future__ import annotations


def learning_rate(epoch: int, solver: dict) -> float:
    """LR for the 1-based ``epoch``: step decay, with an optional linear warm-up.

    ``lr · rate^(number of decay epochs s with epoch > s)`` — 0.05 for epochs 1–150, 0.005 for
    151–180, ... in the reference. With ``warmup_epochs = w > 0`` the first w epochs are scaled
    by ``epoch / w`` (mdistiller has no warm-up; it is off by default).
    """
    stages = solver["lr_decay_epochs"]
    lr = solver["lr"] * solver["lr_decay_rate"] ** sum(epoch > s for s in stages)
    w = solver.get("warmup_epochs", 0)
    if not w:
        return lr
    if solver.get("warmup_mode", "linear") == "ldrld_as_coded":
        # LDRLD helper/util.py: the warm-up writes epoch/w·lr for epoch < w; from epoch w until
        # the first decay it returns the base LR without writing it, so (w-1)/w·lr stays.
        first_decay = stages[0] if stages else float("inf")
        if epoch < w:
            return solver["lr"] * epoch / w
        if epoch <= first_decay:
            return solver["lr"] * (w - 1) / w
        return lr
    if epoch <= w:
        lr *= epoch / w
    return lr


def begin_epoch(epoch: int, solver: dict, optimizer, loader) -> float:
    """What every training loop does at the start of an epoch: the schedule's LR into every
    parameter group and the epoch into the loader (its augmentation draws); returns the LR."""
    lr = learning_rate(epoch, solver)
    for group in optimizer.param_groups:
        group["lr"] = lr
    loader.set_epoch(epoch)
    return lr
