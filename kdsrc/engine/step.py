"""One optimisation step of a distiller: shared by the training loop and the reference-style loop
of the benchmark and parity test, so that the two differ only in where their batches come from."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import torch

from ..distillers import StepState
from ..errors import NonFiniteLossError


def autocast_for(device: torch.device, precision: str) -> Callable | None:
    """A context-manager factory for bf16 autocast on CUDA, or None (fp32)."""
    if precision == "bf16" and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return None


def train_step(distiller, optimizer: torch.optim.Optimizer, batch: Any, state: StepState, *,
               autocast: Callable | None = None, steps_per_epoch: int | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
    """Forward (the distiller's losses), backward, optimizer step; returns ``(logits, losses,
    total)``. The losses are summed in float32 whatever the autocast dtype. A non-finite total
    raises :class:`NonFiniteLossError` naming the epoch, the step and the first bad term, before
    any weight changes."""
    with (autocast() if autocast else contextlib.nullcontext()):
        logits, losses = distiller.forward_train(batch.x, batch.y, batch, state)
    total = sum(v.float() for v in losses.values())
    value = float(total.detach())
    if not math.isfinite(value):
        bad = next((k for k, v in losses.items() if not torch.isfinite(v).all()), "total")
        where = f"step {state.step}" if steps_per_epoch is None else (
            f"step {state.step - (state.epoch - 1) * steps_per_epoch} of {steps_per_epoch}")
        raise NonFiniteLossError(
            f"non-finite loss at epoch {state.epoch}, {where}: "
            f"{bad} = {float(losses.get(bad, total).detach())}; lower the learning rate or check "
            f"the method's weights")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return logits, losses, value
