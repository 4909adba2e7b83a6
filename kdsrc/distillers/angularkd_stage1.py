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
the stage-1 recipe, the per-epoch history and the final accuracies). Trained by the engine's epoch
machinery (:func:`kdsrc.engine.epochs.run_epochs`, the same loop, resume, non-finite check and
checkpointing as a distillation run), so it is resumable: after every epoch ``OUT.partial`` holds
the whole state; running the same command again continues from it
to the same result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from ..config import apply_overrides
from ..data import DeviceLoader, load_dataset
from ..engine.io import atomic_torch_save
from ..engine.loop import resolve_device
from ..engine.epochs import (ResumeFile, RunProgress, check_stale_resume, run_epochs,
                             start_or_resume)
from ..engine.meter import EpochMeter, EpochTotals
from ..engine.progress import Progress
from ..engine.record import device_name, versions
from ..engine.seeding import seed_everything
from ..errors import ConfigError
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
                   progress: Progress | None = None,
                   stale_resume: str = "refuse") -> dict[str, Any]:
    """Train the view branches of ``settings`` (``angularkd`` method settings) on a frozen teacher.

    ``resume``, ``stale_resume``: as :func:`kdsrc.engine.train`, for the ``.partial`` file.

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
    check_stale_resume(stale_resume)
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

    work = ViewsWork(teacher, views, optimizer, recipe, train_loader, test_loader, epochs,
                     progress)
    resume_file = ResumeFile(partial, PARTIAL_FORMAT, "signature", signature, lambda old: (
        "another pretraining (teacher, settings or recipe differ)"))
    done = start_or_resume(resume_file, work, None, progress, enabled=resume,
                           stale_resume=stale_resume)
    done = run_epochs(work, epochs=epochs, solver=solver, optimizer=optimizer,
                      loader=train_loader, resume=resume_file, done=done, progress=progress,
                      epochs_key="pretrain_epochs")
    history, wall_s = done.history, done.wall_s
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


class ViewsWork:
    """Stage 1 as the engine's epoch machinery (:func:`~kdsrc.engine.epochs.run_epochs`)
    trains it: the views on the frozen teacher, evaluated as an ensemble after each epoch."""

    where = "view pretraining: "

    def __init__(self, teacher, views: ViewGenerator, optimizer, recipe: AngularRecipe,
                 loader: DeviceLoader, test_loader: DeviceLoader, epochs: int,
                 progress: Progress):
        self.teacher, self.views, self.optimizer, self.recipe = teacher, views, optimizer, recipe
        self.loader, self.test_loader, self.epochs, self.progress = (loader, test_loader, epochs,
                                                                     progress)
        self.meter = ViewMeter(recipe.num_views)

    def train_epoch(self, epoch: int, lr: float) -> Iterator[None]:
        """One epoch (yielding after each step); nothing is read back to the host inside it:
        the loss sums and the finiteness check add up on the device (EpochMeter) and are read
        once, at its end, and returned."""
        views, recipe, loader = self.views, self.recipe, self.loader
        steps = len(loader)
        views.train()
        sums = EpochMeter(loader.device)
        w = recipe.weights(loader.device)
        for i, batch in enumerate(loader, 1):
            with torch.no_grad():
                logits_t, feats = self.teacher(batch.x)
            feat, logits_t = feats["pooled_feat"].detach().float(), logits_t.float()
            v, z = views(feat)
            losses = recipe.aux_losses(feat, logits_t, v, z, batch.y)
            total = sum(losses.values())
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            with torch.no_grad():
                q = A.ensemble_probs(logits_t, z, weights=w,
                                     temperature=recipe.ensemble_tau(None))
            sums.add(losses, total, q, batch.y)
            self.meter.update(feat, logits_t, v.detach(), z.detach(), q, batch.y)
            self.progress.step(epoch, self.epochs, i, steps, total)
            yield
        return sums.read()

    def epoch_row(self, epoch: int, lr: float, totals: EpochTotals) -> dict[str, Any]:
        row: dict[str, Any] = {"epoch": epoch, "lr": lr}
        row.update({k: v / totals.seen for k, v in totals.loss_sums.items()})
        row["train_loss"] = totals.total_sum / totals.seen
        row.update({f"train_{k}": v for k, v in self.meter.compute().items()})
        test = evaluate_views(self.teacher, self.views, self.test_loader, self.recipe)
        row.update({f"test_{k}": v for k, v in test.items()})
        return row

    def summary(self, row: dict[str, Any], done: RunProgress) -> str:
        return (f"views epoch {row['epoch']}/{self.epochs} lr {row['lr']:.4g} loss "
                f"{row['train_loss']:.4f} ensemble test {row['test_ensemble_top1']:.2f} "
                f"(teacher {row['test_teacher_top1']:.2f}) {row['epoch_s']:.1f}s")

    def epoch_logged(self, done: RunProgress) -> None:
        """Stage 1 keeps its history in the views file's meta; no log file of its own."""

    def finished(self, done: RunProgress) -> bool:
        return False

    def states(self) -> dict[str, Any]:
        return {"views": self.views.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_states(self, state: dict[str, Any]) -> None:
        self.views.load_state_dict(state["views"])
        self.optimizer.load_state_dict(state["optimizer"])


def settings_from_assignments(assignments: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (dotted keys, YAML values) → an ``angularkd`` settings mapping."""
    return apply_overrides({}, assignments)
