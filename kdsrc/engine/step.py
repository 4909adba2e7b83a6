"""One optimisation step of a distiller: shared by the training loop and the reference-style loop
of the benchmark and parity test, so that the two differ only in where their batches come from."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from ..distillers import StepState


def autocast_for(device: torch.device, precision: str) -> Callable | None:
    """A context-manager factory for bf16 autocast on CUDA, or None (fp32)."""
    if precision == "bf16" and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return None


def train_step(distiller, optimizer: torch.optim.Optimizer, batch: Any, state: StepState, *,
               autocast: Callable | None = None, clip_grad_norm: float | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Forward (the distiller's losses), backward, optional gradient clipping, optimizer step;
    returns ``(logits, losses, total)``, all device tensors. The losses are summed in float32 whatever the autocast dtype.

    Nothing is read back to the host: the caller checks finiteness from ``total`` (the training
    loop through :class:`~kdsrc.engine.meter.EpochMeter`, once per epoch, before it saves
    anything)."""
    with (autocast() if autocast else contextlib.nullcontext()):
        logits, losses = distiller.forward_train(batch.x, batch.y, batch, state)
    total = sum(v.float() for v in losses.values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if clip_grad_norm is not None:   # the global L2 norm of every trained gradient (timm's)
        torch.nn.utils.clip_grad_norm_(
            [p for g in optimizer.param_groups for p in g["params"]], clip_grad_norm)
    optimizer.step()
    return logits, losses, total.detach()


def non_finite_message(epoch: int, where: str, term: str, value: float) -> str:
    return (f"non-finite loss at epoch {epoch}, {where}: {term} = {value}; lower the learning "
            f"rate or check the method's weights")
