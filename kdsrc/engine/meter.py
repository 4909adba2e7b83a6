"""What an epoch of training adds up, kept on the device: the host reads it once per epoch.

A GPU runs ahead of the Python that feeds it only while Python never waits for a result. Reading
a loss back (``float(loss)``, ``int(correct)``, ``if not isfinite``) blocks until every queued
kernel has run, which makes a small student's step bound by the host. So the training loop
adds each step's loss terms, its top-1 count and its finiteness check into device tensors and
reads them all in one transfer at the end of the epoch.

Sums are float64 (each term's float32 value times the batch size, added in step order: the same
additions, bit for bit, as the host-side Python floats they replace). A non-finite loss is
found at the latest at the end of its epoch, before that epoch's checkpoint, with the first bad
step and the first bad term of that step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .metrics import topk_hits


@dataclass
class EpochTotals:
    """An epoch's totals, read back to the host."""

    seen: int
    loss_sums: dict[str, float]
    total_sum: float
    correct: int
    #: None, or (step within the epoch, term, value) of the first non-finite loss
    first_bad: tuple[int, str, float] | None


class EpochMeter:
    """Device-side accumulators of one epoch (see the module docstring).

    Every update is in place on tensors made once (the first step makes one per loss term), and
    the step number is counted on the device: a CUDA graph that captured :meth:`accumulate`
    once keeps adding into the same tensors on every replay. :meth:`reset` zeroes them for the
    next epoch without replacing them."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seen = 0
        self._sums: dict[str, torch.Tensor] = {}
        self._total = torch.zeros((), dtype=torch.float64, device=device)
        self._correct = torch.zeros((), dtype=torch.int64, device=device)
        self._step = torch.zeros((), dtype=torch.int64, device=device)        # steps this epoch
        self._bad_step = torch.zeros((), dtype=torch.int64, device=device)    # 0: none yet
        self._bad_values: dict[str, torch.Tensor] = {}
        self._bad_total = torch.zeros((), dtype=torch.float32, device=device)

    def _tensors(self) -> list[torch.Tensor]:
        return [self._total, self._correct, self._step, self._bad_step, self._bad_total,
                *self._sums.values(), *self._bad_values.values()]

    def reset(self) -> None:
        """Start a new epoch: every accumulator back to zero, in place."""
        self.seen = 0
        for t in self._tensors():
            t.zero_()

    def add(self, losses: dict[str, torch.Tensor], total: torch.Tensor, logits: torch.Tensor,
            target: torch.Tensor) -> None:
        """Add one step. Queues device work only."""
        self.count(int(target.shape[0]))   # a shape: known on the host, no device read
        self.accumulate(losses, total, logits, target)

    def count(self, n: int) -> None:
        """The host's share of a step: its batch size (a replayed graph runs no Python)."""
        self.seen += n

    def accumulate(self, losses: dict[str, torch.Tensor], total: torch.Tensor,
                   logits: torch.Tensor, target: torch.Tensor) -> None:
        """The device's share of a step (capturable): sums, top-1 hits, first non-finite step."""
        n = int(target.shape[0])
        self._step += 1
        total = total.detach().float()
        first = ~torch.isfinite(total) & (self._bad_step == 0)
        self._bad_step.copy_(torch.where(first, self._step, self._bad_step))
        self._bad_total.copy_(torch.where(first, total, self._bad_total))
        self._total += total.double() * n
        for k, v in losses.items():
            v = v.detach().float()
            if k not in self._sums:
                self._sums[k] = torch.zeros((), dtype=torch.float64, device=self.device)
                self._bad_values[k] = torch.zeros((), dtype=torch.float32, device=self.device)
            self._sums[k] += v.double() * n
            self._bad_values[k].copy_(torch.where(first, v, self._bad_values[k]))
        self._correct += topk_hits(logits.detach().float(), target, ks=(1,))[0]

    def read(self) -> EpochTotals:
        """Everything in one device-to-host transfer."""
        keys = list(self._sums)
        values = torch.stack([self._total, self._correct.double(), self._bad_step.double(),
                              self._bad_total.double(), *(self._sums[k] for k in keys),
                              *(self._bad_values[k].double() for k in keys)]).tolist()
        total, correct, bad_step, bad_total = values[:4]
        sums = dict(zip(keys, values[4:4 + len(keys)]))
        bad_values = dict(zip(keys, values[4 + len(keys):]))
        first_bad = None
        if bad_step:
            term = next((k for k in keys if not math.isfinite(bad_values[k])), "total")
            first_bad = (int(bad_step), term, bad_values.get(term, bad_total))
        return EpochTotals(self.seen, sums, total, int(correct), first_bad)
