"""Stage 1 of Angular-KD's two-stage pipeline: train the view branches on the frozen teacher
(with the method: the engine names no method; the pipeline's rule ``pretrain_views`` and
``kdsrc pretrain-views`` call it).

Reference: ``configs/cifar100/pretrain.yaml`` + the ``Pretrain`` distiller
(``mdistiller/distillers/_base.py``) of june6423/Angular-KD. The teacher runs in eval mode under ``no_grad``; the views (train mode:
dropout on, BN batch statistics) minimise L_aux only (no student): the four angular losses and
0.8·Σ_i CE(z_i, y), with the angular settings of the ``angularkd`` method. SGD, momentum 0.9,
weight decay 5e-4, batch 64, lr 0.1 ×0.1 after epochs 10 and 20, 30 epochs, the same crop + flip
augmentation as distillation. After every epoch the ensemble (eval mode: no dropout, BN running
statistics) is evaluated on the test split — the reference reports that accuracy.

Differences from the reference, on purpose:

* the reference's optimizer receives the view parameters twice (the wrapper's
  ``named_parameters()`` plus ``view_generator.parameters()`` again), so every view parameter
  takes two SGD steps per iteration sharing one momentum buffer; here each parameter is
  optimised once (the documented recipe);
* the reference's decay stage 30 is never reached in 30 epochs; milestones are [10, 20];
* the May-2025 stage 1 ran the frozen teacher in train mode (its BN statistics drifted); here the
  teacher is always in eval mode, as at HEAD.

Output: ``{"views": state_dict, "meta": {...}}`` written atomically (``meta["format"]`` =
``kdsrc-views/1``, with the teacher's weight fingerprint, the geometry, the angular recipe,
the stage-1 recipe, the per-epoch history and the final accuracies). Resumable: after every
epoch ``OUT.partial`` holds the whole state; running the same command again continues from it
to the same result.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..config import apply_overrides
from ..data import DeviceLoader, load_dataset
from ..engine.io import atomic_torch_save
from ..engine.loop import resolve_device
from ..engine.meter import EpochMeter
from ..engine.progress import Progress
from ..engine.record import device_name, versions
from ..engine.schedule import begin_epoch
from ..engine.seeding import rng_state, seed_everything, set_rng_state
from ..errors import CheckpointError, ConfigError, NonFiniteLossError
from ..losses import angular as A
from ..models import feature_dims, load_teacher
from .angularkd import AngularKD
from .views import VIEWS_FORMAT, AngularRecipe, ViewGenerator, ViewMeter, teacher_fingerprint

PARTIAL_FORMAT = "kdsrc-views-partial/1"


def resolve_view_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """``angularkd`` settings (partial; a ``name`` key is allowed) → resolved settings."""
    settings = dict(settings or {})
    name = settings.pop("name", "angularkd")
    if name != "angularkd":
        raise ConfigError(f"method.name: views are pretrained for method 'angularkd', got {name!r}")
    return AngularKD.finalize_settings(settings)


@torch.no_grad()
def evaluate_views(teacher, views, loader, recipe: AngularRecipe) -> dict[str, float]:
    """Test accuracy (%) of the ensemble, each view and the teacher; views in eval mode."""
    was = views.training
    views.eval()
    n = 0
    ens = teach = 0
    per_view = torch.zeros(recipe.num_views)
    w = recipe.weights(next(views.parameters()).device)
    tau = recipe.ensemble_tau(None)
    for batch in loader:
        logits_t, feats = teacher(batch.x)
        v, z = views(feats["pooled_feat"].float())
        q = A.ensemble_probs(logits_t, z, weights=w, temperature=tau)
        y = batch.y
        ens += int((q.argmax(1) == y).sum())
        teach += int((logits_t.argmax(1) == y).sum())
        per_view += (z.argmax(2) == y[:, None]).sum(0).float().cpu()
        n += y.numel()
    views.train(was)
    out = {"ensemble_top1": 100.0 * ens / n, "teacher_top1": 100.0 * teach / n}
    out.update({f"view{i + 1}_top1": 100.0 * float(c) / n for i, c in enumerate(per_view)})
    return out


def pretrain_views(teacher_name: str, teacher_checkpoint: str | Path, dataset: str,
                   settings: dict[str, Any] | None, out_path: str | Path, *,
                   epochs: int | None = None, lr: float | None = None,
                   milestones: list[int] | None = None, lr_decay_rate: float = 0.1,
                   momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 64,
                   seed: int = 0, device: str | torch.device = "auto", data_root: str | Path = "data",
                   download: bool = False, resume: bool = True,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Train the view branches of ``settings`` (``angularkd`` method settings) on a frozen teacher.

    ``epochs``, ``lr``, ``milestones`` default to the settings' ``pretrain_epochs``,
    ``pretrain_lr``, ``pretrain_milestones`` (30, 0.1, [10, 20]); the values used are written
    into the file's meta, and a distillation with ``views: pretrained`` checks them against its
    own settings. Returns the meta dict.
    """
    s = resolve_view_settings(settings)
    recipe = AngularRecipe.from_settings(s)
    epochs = s["pretrain_epochs"] if epochs is None else int(epochs)
    lr = s["pretrain_lr"] if lr is None else float(lr)
    milestones = list(s["pretrain_milestones"] if milestones is None else milestones)
    if epochs < 1:
        raise ConfigError(f"pretrain_epochs: must be >= 1, got {epochs}")
    out_path = Path(out_path)
    partial = out_path.with_name(out_path.name + ".partial")
    progress = progress or Progress()
    dev = resolve_device(device)

    seeds = seed_everything(seed)
    data = load_dataset(dataset, root=data_root, download=download)
    teacher = load_teacher(teacher_name, teacher_checkpoint, num_classes=data.num_classes)
    fingerprint = teacher_fingerprint(teacher)
    teacher.to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    image_size = data.train_x.shape[-1]
    dim = int(feature_dims(teacher, image_size)["pooled_feat"])
    train_loader = DeviceLoader.from_arrays(data, "train", batch_size=batch_size, device=dev,
                                            seed=seed)
    test_loader = DeviceLoader.from_arrays(data, "test", batch_size=256, device=dev)
    views = ViewGenerator(recipe.num_views, dim, data.num_classes).to(dev)
    # each view parameter once (the reference passed them twice: a double step per iteration)
    optimizer = torch.optim.SGD(views.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    solver = {"lr": lr, "lr_decay_epochs": milestones, "lr_decay_rate": lr_decay_rate}
    signature = {"teacher": teacher_name, "teacher_fingerprint": fingerprint, "dataset": dataset,
                 "recipe": recipe.as_dict(), "epochs": epochs, "lr": lr, "milestones": milestones,
                 "lr_decay_rate": lr_decay_rate, "momentum": momentum,
                 "weight_decay": weight_decay, "batch_size": batch_size, "seed": seed}

    start, history, wall_s = 1, [], 0.0
    if resume and partial.exists():
        start, history, wall_s = _load_partial(partial, signature, views, optimizer, progress)

    meter = ViewMeter(recipe.num_views)
    for epoch in range(start, epochs + 1):
        t0 = time.perf_counter()
        lr_now = begin_epoch(epoch, solver, optimizer, train_loader)
        row = _views_epoch(epoch, epochs, lr_now, teacher, views, optimizer, recipe,
                           train_loader, meter, progress)
        test = evaluate_views(teacher, views, test_loader, recipe)
        row.update({f"test_{k}": v for k, v in test.items()})
        row["epoch_s"] = time.perf_counter() - t0
        wall_s += row["epoch_s"]
        history.append(row)
        progress.line(f"views epoch {epoch}/{epochs} lr {lr_now:.4g} loss {row['train_loss']:.4f} "
                      f"ensemble test {test['ensemble_top1']:.2f} (teacher "
                      f"{test['teacher_top1']:.2f}) {row['epoch_s']:.1f}s")
        atomic_torch_save({"format": PARTIAL_FORMAT, "signature": signature, "epoch": epoch,
                           "views": views.state_dict(), "optimizer": optimizer.state_dict(),
                           "rng": rng_state(), "history": history, "wall_s": wall_s}, partial)

    if not history:
        raise ConfigError("pretrain_epochs: nothing was trained")
    last = history[-1]
    meta = {
        "format": VIEWS_FORMAT,
        "teacher": teacher_name,
        "teacher_checkpoint": str(teacher_checkpoint),
        "teacher_fingerprint": fingerprint,
        "dataset": dataset,
        "num_views": recipe.num_views,
        "dim": dim,
        "num_classes": data.num_classes,
        "recipe": recipe.as_dict(),
        "pretrain": {"pretrain_epochs": epochs, "pretrain_lr": lr, "pretrain_milestones": milestones},
        "optimizer": {"type": "SGD", "momentum": momentum, "weight_decay": weight_decay,
                      "lr_decay_rate": lr_decay_rate, "batch_size": batch_size},
        "seed": seed,
        "seeds": seeds,
        "settings": s,
        "test": {k[len("test_"):]: v for k, v in last.items() if k.startswith("test_")},
        "history": history,
        "wall_s": round(wall_s, 3),
        "device": device_name(dev),
        "versions": {k: str(v) for k, v in versions().items()},   # plain str: weights-only loadable
    }
    atomic_torch_save({"views": {k: v.detach().cpu() for k, v in views.state_dict().items()},
                       "meta": meta}, out_path)
    partial.unlink(missing_ok=True)
    return meta


def _load_partial(partial: Path, signature: dict[str, Any], views, optimizer,
                  progress: Progress) -> tuple[int, list[dict[str, Any]], float]:
    """``(next epoch, history, wall_s)`` of a stage-1 resume file, its views, optimizer and RNG
    states loaded; it must be from the same pretraining (``signature``)."""
    try:
        state = torch.load(partial, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read {partial}: {e}".splitlines()[0]) from None
    if not isinstance(state, dict) or state.get("format") != PARTIAL_FORMAT:
        raise CheckpointError(f"{partial} is not a kdsrc views resume file")
    if state["signature"] != signature:
        raise ConfigError(f"{partial} was written by another pretraining (teacher, settings "
                          f"or recipe differ); delete it or pass --no-resume")
    views.load_state_dict(state["views"])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    progress.line(f"resuming view pretraining from {partial} after epoch {state['epoch']}")
    return state["epoch"] + 1, state["history"], state["wall_s"]


def _views_epoch(epoch: int, epochs: int, lr_now: float, teacher, views, optimizer,
                 recipe: AngularRecipe, train_loader: DeviceLoader, meter: ViewMeter,
                 progress: Progress) -> dict[str, Any]:
    """One stage-1 epoch of the views on the frozen teacher: its log row (losses, train
    diagnostics) without the test accuracies. Nothing is read back to the host inside the
    epoch: the loss sums and the finiteness check add up on the device (the engine's
    :class:`~kdsrc.engine.meter.EpochMeter`, the same sums as host floats) and are read once."""
    dev = train_loader.device
    steps = len(train_loader)
    views.train()
    sums = EpochMeter(dev)
    w = recipe.weights(dev)
    for i, batch in enumerate(train_loader, 1):
        with torch.no_grad():
            logits_t, feats = teacher(batch.x)
        feat, logits_t = feats["pooled_feat"].detach().float(), logits_t.float()
        v, z = views(feat)
        losses = recipe.aux_losses(feat, logits_t, v, z, batch.y)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        with torch.no_grad():
            q = A.ensemble_probs(logits_t, z, weights=w,
                                 temperature=recipe.ensemble_tau(None))
        sums.add(losses, total, q, batch.y)
        meter.update(feat, logits_t, v.detach(), z.detach(), q, batch.y)
        progress.step(epoch, epochs, i, steps, total)
    totals = sums.read()
    if totals.first_bad is not None:
        step, term, _ = totals.first_bad
        raise NonFiniteLossError(f"view pretraining: non-finite loss at epoch {epoch}, "
                                 f"step {step} of {steps}: {term}")
    row: dict[str, Any] = {"epoch": epoch, "lr": lr_now}
    row.update({k: v / totals.seen for k, v in totals.loss_sums.items()})
    row["train_loss"] = totals.total_sum / totals.seen
    row.update({f"train_{k}": v for k, v in meter.compute().items()})
    return row


def settings_from_assignments(assignments: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (dotted keys, YAML values) → an ``angularkd`` settings mapping."""
    return apply_overrides({}, assignments)
