"""Learning-rate schedules, one LR per epoch as a pure function of ``(epoch, solver)`` (so a resumed
run sets the same LR): the reference recipe's step decay (mdistiller ``adjust_learning_rate``)
and the transformer recipes' cosine schedules.

``cosine`` is timm's ``CosineLRScheduler`` as RSD's ``train.py`` steps it once per epoch
(``t_initial`` = epochs, one cycle, ``warmup_prefix`` off): at 0-based epoch ``t``,
``warmup_lr + t·(lr − warmup_lr)/w`` for ``t < w``, else
``min_lr + ½(lr − min_lr)(1 + cos(π t / epochs))``. ``cosine_after_warmup`` is the multi-view
project's ``SequentialLR(LinearLR, CosineAnnealingLR(T_max = epochs − w))``: the same warm-up,
then ``min_lr + ½(lr − min_lr)(1 + cos(π (t − w) / (epochs − w)))``. Both are written out here
rather than stepped through the schedulers, whose state would have to be saved and replayed;
a test checks them against timm's and torch's schedulers epoch by epoch.
"""

from __future__ import annotations

import math


def learning_rate(epoch: int, solver: dict) -> float:
    """LR for the 1-based ``epoch``: step decay, with an optional linear warm-up.

    ``lr · rate^(number of decay epochs s with epoch > s)`` — 0.05 for epochs 1–150, 0.005 for
    151–180, ... in the reference. With ``warmup_epochs = w > 0`` the first w epochs are scaled
    by ``epoch / w`` (mdistiller has no warm-up; it is off by default).
    """
    kind = solver.get("lr_schedule", "step")
    if kind != "step":
        return _cosine(epoch - 1, solver, after_warmup=kind == "cosine_after_warmup")
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


def _cosine(t: int, solver: dict, *, after_warmup: bool) -> float:
    lr, floor, w, epochs = solver["lr"], solver["min_lr"], solver["warmup_epochs"], solver["epochs"]
    if t < w:
        return solver["warmup_lr"] + t * (lr - solver["warmup_lr"]) / w
    if after_warmup:
        t, epochs = t - w, epochs - w
    return floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * t / epochs))


def begin_epoch(epoch: int, solver: dict, optimizer, loader) -> float:
    """What every training loop does at the start of an epoch: the schedule's LR into every
    parameter group and the epoch into the loader (its augmentation draws); returns the LR."""
    lr = learning_rate(epoch, solver)
    for group in optimizer.param_groups:
        group["lr"] = lr
    loader.set_epoch(epoch)
    return lr
