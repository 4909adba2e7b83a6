"""The training step reads nothing back to the host inside an epoch (GPU throughput, part 1):
loss terms, top-1 counts and the finiteness check add up on the device and are read once per
epoch, with the same numbers as a per-step loop that reads everything."""

from __future__ import annotations

import contextlib

import pytest
import torch

from kdsrc.config import resolve_run_config
from kdsrc.data import DeviceLoader, load_dataset
from kdsrc.distillers import StepState
from kdsrc.engine import Progress, RunPaths, train
from kdsrc.engine.loop import build_run
from kdsrc.engine.schedule import begin_epoch
from kdsrc.engine.seeding import seed_everything
from kdsrc.engine.step import train_step
from kdsrc.models import load_state_dict_file

READS = ("item", "__float__", "__int__", "__bool__")


@contextlib.contextmanager
def counted_reads():
    """Count every Tensor.item / float() / int() / bool() while the block runs."""
    count = {"n": 0}
    real = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(fn):
        def counted(self, *a, **k):
            count["n"] += 1
            return fn(self, *a, **k)
        return counted

    for name, fn in real.items():
        setattr(torch.Tensor, name, wrap(fn))
    try:
        yield count
    finally:
        for name, fn in real.items():
            setattr(torch.Tensor, name, fn)


class ReadsPerEpoch(Progress):
    """A silent progress that notes the read count at every step: reads between the first and
    the last step of an epoch are reads inside the epoch."""

    def __init__(self, count, *, leak: bool = False):
        super().__init__(enabled=False)
        self.count, self.leak = count, leak
        self.at: dict[int, list[int]] = {}

    def step(self, epoch, epochs, step, steps, loss):
        if self.leak:          # the negative control: a display that reads every loss
            float(loss)
        self.at.setdefault(epoch, []).append(self.count["n"])

    def reads_inside(self) -> dict[int, int]:
        return {e: marks[-1] - marks[0] for e, marks in self.at.items()}


def _cfg(method, seed=0):
    return {"dataset": "digits", "student": "resnet8", "method": method,
            "solver": {"epochs": 2, "batch_size": 32}, "seed": seed}


@pytest.fixture(scope="module")
def small():
    return load_dataset("digits").head(160, 64)


def _train_counting(tmp_path, cfg, data, *, leak=False):
    with counted_reads() as count:
        progress = ReadsPerEpoch(count, leak=leak)
        train(cfg, RunPaths.in_dir(tmp_path), device="cpu", progress=progress, arrays=data)
    return progress


@pytest.mark.parametrize("method", [
    "vanilla", {"name": "kd"}, {"name": "crd", "nce_k": 64, "kd_weight": 1.0},
    {"name": "angularkd", "base": "crd", "views": "joint", "base_settings": {"nce_k": 64}},
])
def test_no_host_read_inside_an_epoch(tmp_path, digits_teacher, small, method):
    cfg = _cfg(method)
    if method != "vanilla":
        cfg["teacher"] = {"name": "resnet8", "checkpoint": str(digits_teacher)}
    progress = _train_counting(tmp_path, cfg, small)
    steps = -(-small.num_train // 32)
    assert {e: len(m) for e, m in progress.at.items()} == {1: steps, 2: steps}
    assert progress.reads_inside() == {1: 0, 2: 0}


def test_a_display_that_reads_every_loss_is_caught(tmp_path, small):
    progress = _train_counting(tmp_path, _cfg("vanilla"), small, leak=True)
    steps = -(-small.num_train // 32)
    assert progress.reads_inside() == {1: steps - 1, 2: steps - 1}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the sync-debug mode "
                    "that turns every blocking device read into an error is CUDA's")
def test_no_synchronising_call_inside_an_epoch_on_cuda(tmp_path):
    data = load_dataset("digits").head(160, 64)

    class Strict(Progress):
        def __init__(self):
            super().__init__(enabled=False)
            self.steps = 0

        def step(self, epoch, epochs, step, steps, loss):
            self.steps += 1
            # from the first step of an epoch to its last, any synchronising call raises
            torch.cuda.set_sync_debug_mode("error" if step < steps else "default")

    progress = Strict()
    try:
        train(_cfg("vanilla"), RunPaths.in_dir(tmp_path), device="cuda", progress=progress,
              arrays=data)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert progress.steps == 2 * -(-data.num_train // 32)


def test_the_loop_equals_a_per_step_reference(tmp_path, digits_teacher, small):
    """The same seed and batches through ``train_step`` with every number read at once: the
    engine's per-epoch sums and top-1 agree (float64 device sums vs Python floats: same
    additions, so to the last bit here; the stated tolerance is 1e-12 relative), and the final
    weights are bit for bit the same in fp32."""
    cfg = resolve_run_config({**_cfg({"name": "kd"}, seed=3),
                              "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher)}})
    paths = RunPaths.in_dir(tmp_path)
    train(cfg, paths, device="cpu", progress=Progress(enabled=False), arrays=small)
    history = torch.load(paths.last, weights_only=True)["history"]

    seed_everything(cfg["seed"])
    solver = cfg["solver"]
    loader = DeviceLoader.from_arrays(small, "train", batch_size=solver["batch_size"],
                                      seed=cfg["seed"])
    parts = build_run(cfg, small, torch.device("cpu"), loader)
    rows = []
    for epoch in (1, 2):
        begin_epoch(epoch, solver, parts.optimizer, loader)
        parts.distiller.train()
        sums, total, correct, seen = {}, 0.0, 0, 0
        for i, batch in enumerate(loader, 1):
            state = StepState(epoch=epoch, step=(epoch - 1) * len(loader) + i, epochs=2)
            logits, losses, tot = train_step(parts.distiller, parts.optimizer, batch, state)
            n = batch.y.numel()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
            total += float(tot) * n
            correct += int((logits.detach().float().topk(1, dim=1).indices[:, 0] == batch.y).sum())
            seen += n
        rows.append({"train_loss": total / seen, "train_top1": 100.0 * correct / seen,
                     **{k: v / seen for k, v in sums.items()}})
    for got, want in zip(history, rows):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-12, abs=0), key
    final = load_state_dict_file(paths.final)
    for k, v in parts.distiller.student.state_dict().items():
        assert torch.equal(final[k], v), k
