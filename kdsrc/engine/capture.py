"""The whole training step over static device buffers, replayed as a CUDA graph.

A small student's step is bound by the host: hundreds of kernel launches, each a few
microseconds of Python and driver work, for a GPU that finishes them faster than they arrive.
A CUDA graph records the launches of one step once and replays them with one call. What the
graph replays must therefore never change between steps on the host side, so this step reads
everything that moves from device tensors written in place:

* the epoch's draws (permutation, crop offsets, flips), copied once per epoch from the loader
  (:meth:`~kdsrc.data.DeviceLoader.draws`, a pure function of seed and epoch) into buffers of
  length N; a cursor tensor, advanced inside the step, says where the batch starts. Batch
  indexing and the crop/flip are part of the graph;
* the learning rate and the epoch (for the methods' loss ramps, :meth:`StepState.ramp`), set
  with ``fill_`` at the start of each epoch; the optimizer update reads the LR from its tensor
  (:func:`kdsrc.engine.optim.sgd_step`);
* the gradients, zeroed in place and accumulated into (never set to None), so every graph
  writes the same tensors; the epoch's sums, top-1 and finiteness check
  (:class:`~kdsrc.engine.meter.EpochMeter`, in place, its step counted on the device).

Random draws inside a method (CRD's negatives, TeKAP's noise) come from torch's default CUDA
generator, which graphs replay with fresh offsets (graph-safe RNG).

One graph per batch shape: the full batch and the epoch's last, partial batch. Each shape runs
its first ``warmup`` steps eagerly on a side stream (real training steps, not extra ones:
CUDA's libraries initialise lazily, which a capture must not see) and is then captured and
replayed. Run eagerly (``capture=False``) the same code is a plain training step on any device:
the CPU tests compare it with the ordinary step, so only the capture itself needs a GPU.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..data import DeviceLoader
from ..data.augment import augment
from ..data.loader import Batch
from ..distillers import StepState
from ..errors import ConfigError
from .meter import EpochMeter
from .optim import check_sgd, ensure_momentum_buffers, sgd_step

#: eager steps of each batch shape before it is captured
WARMUP_STEPS = 2


def run_capture_blocker(method: type, settings: dict[str, Any], teacher_cache: Any
                        ) -> str | None:
    """Why this run's step cannot be captured, or None: the method's own reason
    (:meth:`Distiller.capture_blocker_for`), or a teacher cache the step cannot read on the
    device (memory-mapped on the host, or the multi-view scheme, whose slot lookup checks each
    batch on the host)."""
    reason = method.capture_blocker_for(settings)
    if reason:
        return reason
    if teacher_cache is not None:
        if not teacher_cache.resident:
            return "its teacher cache is read from host memory (not resident on the GPU)"
        if teacher_cache.variants is not None:
            return "its multi-view teacher cache checks each batch's views on the host"
        if teacher_cache.view_images is not None:
            return "it trains on a teacher cache's stored views (one view per epoch)"
    return None


class StaticStep:
    """The capturable training step of one run (see the module docstring).

    Call :meth:`begin_epoch` with the epoch and its LR, then :meth:`step` once per batch of
    the epoch (``len(loader)`` times); read the epoch's totals from :attr:`meter`."""

    def __init__(self, distiller, optimizer: torch.optim.Optimizer, loader: DeviceLoader, *,
                 epochs: int, autocast_dtype: torch.dtype | None = None, capture: bool = False,
                 warmup: int = WARMUP_STEPS):
        check_sgd(optimizer)
        dev = loader.device
        if capture and dev.type != "cuda":
            raise ConfigError(f"cuda_graph: a CUDA graph needs a CUDA device, this run is on "
                              f"{dev.type}")
        if not loader.train:
            raise ValueError("StaticStep needs a training loader")
        ensure_momentum_buffers(optimizer)
        self.distiller, self.optimizer, self.loader = distiller, optimizer, loader
        self.epochs, self.capture, self.warmup = epochs, capture, warmup
        self.autocast_dtype = autocast_dtype
        n = loader.num_samples
        self.perm = torch.zeros(n, dtype=torch.int64, device=dev)
        self.dy = torch.zeros(n, dtype=torch.int64, device=dev)
        self.dx = torch.zeros(n, dtype=torch.int64, device=dev)
        self.flip = torch.zeros(n, dtype=torch.bool, device=dev)
        self.cursor = torch.zeros((), dtype=torch.int64, device=dev)
        self.lr = torch.zeros((), dtype=torch.float32, device=dev)
        self.epoch_t = torch.zeros((), dtype=torch.float32, device=dev)
        self.meter = EpochMeter(dev)
        self.epoch = 0
        self._offsets: dict[int, torch.Tensor] = {}
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._eager_runs: dict[int, int] = {}
        self._steps = 0

    @property
    def captured_shapes(self) -> list[int]:
        """The batch sizes captured so far."""
        return sorted(self._graphs)

    def begin_epoch(self, epoch: int, lr: float) -> None:
        """The epoch's draws into the buffers, the LR and epoch into their tensors, the cursor
        and the meter back to zero (all in place, between replays)."""
        d = self.loader.draws(epoch)
        for buf, src in ((self.perm, d.perm), (self.dy, d.dy), (self.dx, d.dx),
                         (self.flip, d.flip)):
            buf.copy_(src)
        self.lr.fill_(float(lr))
        self.epoch_t.fill_(float(epoch))
        self.cursor.zero_()
        self.meter.reset()
        self.epoch = epoch

    def step(self, batch_size: int) -> torch.Tensor:
        """One training step of ``batch_size`` samples at the cursor; returns the step's total
        loss (a device tensor; with a graph, the graph's output, overwritten by the next
        replay)."""
        self.meter.count(batch_size)
        self._steps += 1
        if not self.capture:
            return self._body(batch_size)
        done = self._graphs.get(batch_size)
        if done is None:
            runs = self._eager_runs.get(batch_size, 0)
            if runs < self.warmup:
                self._eager_runs[batch_size] = runs + 1
                return self._on_side_stream(batch_size)
            done = self._graphs[batch_size] = self._record(batch_size)
        graph, total = done
        graph.replay()
        return total

    # -- internals ---------------------------------------------------------------------------
    def _offsets_of(self, b: int) -> torch.Tensor:
        if b not in self._offsets:
            self._offsets[b] = torch.arange(b, dtype=torch.int64, device=self.cursor.device)
        return self._offsets[b]

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # the autocast cast cache must be off while a graph is recorded (its cached casts
        # would be freed after the capture)
        return torch.autocast(self.cursor.device.type, dtype=self.autocast_dtype,
                              cache_enabled=False)

    def _body(self, b: int) -> torch.Tensor:
        """The step itself: what a graph records."""
        loader, distiller = self.loader, self.distiller
        pos = self.cursor + self._offsets_of(b)
        idx = self.perm.index_select(0, pos)
        dy, dx, fl = (t.index_select(0, pos) for t in (self.dy, self.dx, self.flip))
        x = augment(loader.images.index_select(0, idx), dy, dx, fl, pad=loader.pad,
                    mean=loader._mean_t, std=loader._std_t, dtype=loader.dtype,
                    channels_last=loader.channels_last, check=False)
        y = loader.labels.index_select(0, idx)
        batch = Batch(x=x, y=y, index=idx, dy=dy, dx=dx, flip=fl)
        state = StepState(epoch=self.epoch, step=self._steps, epochs=self.epochs,
                          epoch_t=self.epoch_t)
        with self._autocast():
            logits, losses = distiller.forward_train(x, y, batch, state)
        total = sum(v.float() for v in losses.values())
        grads = [p.grad for p in distiller.trainable_parameters() if p.grad is not None]
        if grads:
            torch._foreach_zero_(grads)
        total.backward()
        sgd_step(self.optimizer, self.lr)
        self.meter.accumulate(losses, total, logits, y)
        self.cursor += b
        return total.detach()

    def _on_side_stream(self, b: int) -> torch.Tensor:
        side = torch.cuda.Stream(device=self.cursor.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            total = self._body(b)
        torch.cuda.current_stream().wait_stream(side)
        return total

    def _record(self, b: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(self.cursor.device)
        with torch.cuda.graph(graph):
            total = self._body(b)
        return graph, total
