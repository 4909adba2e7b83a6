"""Fast mode vs the reference data path, step by step (CPU, fp32): the engine's training with
its device-resident loader and an exact teacher cache gives the same per-step losses over the
first 50 steps as the official code's path (PIL transforms in a DataLoader, the teacher run on
every batch) fed the same augmentation draws. Any change of maths on either side breaks it.
The fast mode's channels_last memory format is switched off for the comparison: it selects other
convolution kernels, whose rounding makes the loss drift ~1e-3 away within a few steps (tested
separately: the first step agrees to rounding, and channels_last runs are deterministic).

Data: a 128-image slice of digits with horizontal flips switched on, so the cache holds all
162 crop/flip variants and both augmentation axes are exercised.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kdsrc.cache import build_teacher_cache
from kdsrc.config import resolve_run_config
from kdsrc.data import DatasetArrays, DeviceLoader, load_dataset
from kdsrc.data.reference_loader import ReferenceLoader, ReplayDataset
from kdsrc.distillers import StepState
from kdsrc.engine import RunPaths, learning_rate, train
from kdsrc.engine.loop import build_run
from kdsrc.engine.seeding import seed_everything
from kdsrc.engine.step import train_step
from kdsrc.models import load_teacher
from kdsrc_testutil import step_losses

N_TRAIN, BATCH, STEPS, SEED = 128, 8, 50, 3
EPOCHS = -(-STEPS // (N_TRAIN // BATCH))  # enough whole epochs to cover STEPS


@pytest.fixture(scope="module")
def flipped() -> DatasetArrays:
    d = load_dataset("digits")
    return dataclasses.replace(d.head(N_TRAIN, 64), flip=True)


@pytest.fixture(scope="module")
def exact_cache(tmp_path_factory, digits_teacher, flipped):
    teacher = load_teacher("resnet8", digits_teacher, num_classes=10)
    out = tmp_path_factory.mktemp("cache") / "exact"
    build_teacher_cache(teacher, flipped, out, dtype=torch.float32, store_pooled=True,
                        teacher_name="resnet8", batch_size=1024)
    return out


def _config(method: dict, digits_teacher, cache) -> dict:
    return {"dataset": "digits", "student": "resnet8", "method": method, "mode": "fast",
            # channels_last is a kernel choice, not maths: it changes rounding (checked below)
            "channels_last": "off",
            "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher), "cache": str(cache)},
            "solver": {"epochs": EPOCHS, "batch_size": BATCH, "lr_decay_epochs": [2]},
            "seed": SEED}


def _reference_losses(cfg: dict, data: DatasetArrays, workers: int) -> list[float]:
    """The official path: the engine's models and optimizer (``build_run``, same seed, so the
    same initial weights), a PIL DataLoader replaying the device loader's draws, no teacher
    cache, the engine's ``train_step``."""
    cfg = resolve_run_config(cfg)
    solver = cfg["solver"]
    seed_everything(cfg["seed"])
    draws_from = DeviceLoader.from_arrays(data, "train", batch_size=BATCH, seed=cfg["seed"])
    loader = ReferenceLoader(data, batch_size=BATCH, workers=workers, replay=draws_from)
    parts = build_run(cfg, data, torch.device("cpu"), draws_from, use_cache=False)
    distiller, optimizer = parts.distiller, parts.optimizer
    losses: list[float] = []
    for epoch in range(1, solver["epochs"] + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(epoch, solver)
        loader.set_epoch(epoch)
        distiller.train()
        for i, batch in enumerate(loader, 1):
            assert batch.dy is None  # the reference path never reads the cache
            state = StepState(epoch=epoch, step=(epoch - 1) * len(loader) + i,
                              epochs=solver["epochs"])
            losses.append(float(train_step(distiller, optimizer, batch, state)[2]))
            if len(losses) == STEPS:
                return losses
    return losses


def _fast_losses(cfg, data, tmp_path) -> tuple[list[float], dict]:
    prog = step_losses()
    record = train(cfg, RunPaths.in_dir(tmp_path), device="cpu", progress=prog, arrays=data)
    return prog.losses[:STEPS], record


def _assert_same(fast, ref):
    assert len(fast) == len(ref) == STEPS
    rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(fast, ref)]
    assert max(rel) < 1e-4, (max(rel), rel.index(max(rel)))
    assert len(set(round(v, 3) for v in ref)) > STEPS // 2  # the losses really move


@pytest.mark.parametrize("method", [
    {"name": "kd"},
    {"name": "angularkd", "base": "crd", "preset": "official",
     "base_settings": {"kd_weight": 1.0, "nce_k": 64}},
], ids=["kd", "angularkd_crd"])
def test_fast_mode_matches_the_reference_path(method, digits_teacher, exact_cache, flipped,
                                              tmp_path):
    cfg = _config(method, digits_teacher, exact_cache)
    fast, record = _fast_losses(cfg, flipped, tmp_path)
    assert record["teacher_cache_used"] is True and record["mode"] == "fast"
    _assert_same(fast, _reference_losses(cfg, flipped, workers=0))


@pytest.mark.slow
def test_reference_path_with_worker_processes(digits_teacher, exact_cache, flipped, tmp_path):
    """Two DataLoader workers, as the official code runs it: the same batches arrive."""
    cfg = _config({"name": "kd"}, digits_teacher, exact_cache)
    fast, _ = _fast_losses(cfg, flipped, tmp_path)
    _assert_same(fast, _reference_losses(cfg, flipped, workers=2))


def test_a_changed_draw_breaks_parity(digits_teacher, exact_cache, flipped, tmp_path,
                                      monkeypatch):
    """The comparison is sensitive: one image's crop shifted by a pixel is detected."""
    cfg = _config({"name": "kd"}, digits_teacher, exact_cache)
    fast, _ = _fast_losses(cfg, flipped, tmp_path)
    set_draws = ReplayDataset.set_draws

    def shifted(self, draws):
        set_draws(self, draws)
        self._dx[int(draws.perm[0])] ^= 1

    monkeypatch.setattr(ReplayDataset, "set_draws", shifted)
    ref = _reference_losses(cfg, flipped, workers=0)
    assert max(abs(a - b) / abs(b) for a, b in zip(fast, ref)) > 1e-4


def test_official_style_loader_draws_its_own_augmentation(flipped):
    """Without replay, the loader shuffles and augments with torch/torchvision RNGs: every
    image once per epoch, augmented (not the raw pixels), reproducible from (seed, epoch)."""
    def epoch_batches(seed, epoch):
        loader = ReferenceLoader(flipped, batch_size=32, workers=0, seed=seed)
        loader.set_epoch(epoch)
        torch.manual_seed(0)  # workers=0: torchvision's draws come from the global RNG
        return list(loader)

    a, b, c = epoch_batches(1, 1), epoch_batches(1, 1), epoch_batches(1, 2)
    idx = torch.cat([x.index for x in a])
    assert sorted(idx.tolist()) == list(range(N_TRAIN)) and len(a) == 4
    assert all(torch.equal(x.x, y.x) and torch.equal(x.index, y.index) for x, y in zip(a, b))
    assert not torch.equal(idx, torch.cat([x.index for x in c]))
    assert a[0].x.shape == (32, 3, 32, 32) and a[0].dy is None
    raw = next(iter(DeviceLoader(flipped.train_x, flipped.train_y, batch_size=N_TRAIN,
                                 mean=flipped.mean, std=flipped.std, train=False)))
    assert not torch.equal(a[0].x, raw.x[a[0].index])


def test_channels_last_agrees_to_rounding_and_is_deterministic(digits_teacher, exact_cache,
                                                                flipped, tmp_path):
    cfg = _config({"name": "kd"}, digits_teacher, exact_cache)
    cl = dict(cfg, channels_last="auto")  # fast mode: on
    a, rec = _fast_losses(cl, flipped, tmp_path / "a")
    b, _ = _fast_losses(cl, flipped, tmp_path / "b")
    c, _ = _fast_losses(cfg, flipped, tmp_path / "c")
    assert a == b
    assert rec["config"]["channels_last"] == "auto" and rec["teacher_cache_used"] is True
    assert abs(a[0] - c[0]) / abs(c[0]) < 1e-5 and a != c
