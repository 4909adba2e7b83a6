"""``torch.optim.SGD``'s update with the learning rate in a device tensor, for a captured step.

``SGD.step()`` takes its learning rate from a Python float in ``param_groups`` (a tensor LR is
read back with ``.item()``), so a CUDA graph that captured it would replay the LR of the moment
of capture for ever. :func:`sgd_step` applies the same update (weight decay, momentum with
dampening 0, Nesterov) to the same parameters and the same momentum buffers
(``optimizer.state[p]["momentum_buffer"]``, so checkpoints and resume are unchanged), with the
LR read from a 0-d tensor that the engine sets at the start of each epoch.

Bit for bit on a CPU it is ``SGD.step()``: the same kernels in the same order, and the last
``param -= lr·d`` as ``addcmul_(d, lr, value=-1)``, which rounds as ``add_(d, alpha=-lr)``
does. A zero momentum buffer made before the first step gives the reference's first step
exactly (``0·m + d = d``), so buffers exist before capture (:func:`ensure_momentum_buffers`).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError


def check_sgd(optimizer: torch.optim.Optimizer) -> None:
    """What :func:`sgd_step` implements: plain SGD (dampening 0, not maximising)."""
    if not isinstance(optimizer, torch.optim.SGD):
        raise ConfigError(f"cuda_graph: the captured step implements SGD, the optimizer is "
                          f"{type(optimizer).__name__}")
    for group in optimizer.param_groups:
        if group.get("dampening", 0) != 0 or group.get("maximize", False):
            raise ConfigError("cuda_graph: the captured step implements SGD without dampening "
                              "and without maximize")


@torch.no_grad()
def ensure_momentum_buffers(optimizer: torch.optim.SGD) -> None:
    """A zero momentum buffer for every parameter that has none yet (see the module doc)."""
    for group in optimizer.param_groups:
        if group["momentum"] == 0:
            continue
        for p in group["params"]:
            state = optimizer.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


@torch.no_grad()
def sgd_step(optimizer: torch.optim.SGD, lr: torch.Tensor) -> None:
    """One SGD update of every parameter with a gradient, the LR read from ``lr`` (a 0-d
    tensor on the parameters' device). Momentum buffers must exist
    (:func:`ensure_momentum_buffers`)."""
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        grads = [p.grad for p in params]
        wd, momentum = group["weight_decay"], group["momentum"]
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if momentum != 0:
            bufs = [optimizer.state[p]["momentum_buffer"] for p in params]
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads, alpha=1.0)
            if group["nesterov"]:
                grads = torch._foreach_add(grads, bufs, alpha=momentum)
            else:
                grads = bufs
        if params[0].device.type == "cpu":
            # bit for bit the rounding of SGD.step()'s add_(d, alpha=-lr) (see the module doc)
            for p, d in zip(params, grads):
                p.addcmul_(d, lr, value=-1)
        else:
            torch._foreach_addcmul_(params, grads, [lr] * len(params), value=-1)
