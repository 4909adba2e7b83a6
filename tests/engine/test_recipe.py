"""The transformer recipes' parts in the engine: cosine schedules, AdamW and its decay groups,
label smoothing, gradient clipping, mixup/cutmix, the validation split and early stopping. Each
default keeps the reference recipe (the plan tests check hashes and params)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from kdsrc_testutil import LR_ZERO

from kdsrc.config import ConfigError, resolve_run_config
from kdsrc.data import load_dataset
from kdsrc.distillers import DistillContext, StepState, build_distiller
from kdsrc.engine import Progress, RunPaths, train
from kdsrc.engine.loop import early_stop_due, val_best
from kdsrc.engine.recipe import build_mixup, build_optimizer, recipe_capture_blocker
from kdsrc.engine.schedule import learning_rate
from kdsrc.engine.step import train_step
from kdsrc.models import build_model, feature_dims

BASE = {"dataset": "digits", "student": "resnet8", "method": "vanilla"}


def _solver(**kw):
    return resolve_run_config({**BASE, "solver": kw})["solver"]


def test_cosine_is_timms_scheduler_epoch_by_epoch():
    from timm.scheduler import CosineLRScheduler

    s = _solver(epochs=40, lr=5e-4, min_lr=1e-5, warmup_lr=5e-7, warmup_epochs=6,
                lr_schedule="cosine")
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    ref = CosineLRScheduler(opt, t_initial=40, lr_min=1e-5, warmup_lr_init=5e-7, warmup_t=6,
                            cycle_limit=1, t_in_epochs=True)
    ours = [learning_rate(e, s) for e in range(1, 41)]
    assert ours == pytest.approx([ref._get_lr(t)[0] for t in range(40)], rel=1e-12, abs=0)
    assert ours[0] == 5e-7 and min(ours[6:]) >= 1e-5 and max(ours) <= 5e-4


def test_cosine_after_warmup_is_torchs_sequential_schedule():
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    s = _solver(epochs=30, lr=5e-4, warmup_lr=5e-5, warmup_epochs=10,
                lr_schedule="cosine_after_warmup", optimizer="adamw")
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    sched = SequentialLR(opt, [LinearLR(opt, start_factor=0.1, total_iters=10),
                               CosineAnnealingLR(opt, T_max=20)], milestones=[10])
    ref = []
    for _ in range(30):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [learning_rate(e, s) for e in range(1, 31)] == pytest.approx(ref, rel=1e-9)


def test_step_schedule_is_unchanged_by_default():
    s = _solver()
    assert s["lr_schedule"] == "step"
    assert [learning_rate(e, s) for e in (1, 150, 151, 181, 240)] == pytest.approx(
        [0.05, 0.05, 0.005, 0.0005, 0.00005])


def test_bad_recipe_combinations_are_refused_before_work():
    with pytest.raises(ConfigError, match="solver.early_stop_patience: needs a validation"):
        _solver(early_stop_patience=5)
    with pytest.raises(ConfigError, match="solver.warmup_mode"):
        _solver(lr_schedule="cosine", warmup_epochs=2, warmup_mode="ldrld_as_coded")
    with pytest.raises(ConfigError, match="solver.optimizer"):
        _solver(optimizer="lamb")


def test_a_fixed_size_model_needs_its_image_size():
    with pytest.raises(ConfigError, match="student: timm-deit_tiny_patch16_224 takes 224-px "
                                          "images, this run gives it 32 px .set solver.image_size"):
        resolve_run_config({**BASE, "student": "timm-deit_tiny_patch16_224"})
    resolve_run_config({**BASE, "student": "timm-deit_tiny_patch16_224",
                        "solver": {"image_size": 224}})
    with pytest.raises(ConfigError, match="teacher: vit6_p4_32 takes 32-px images"):
        resolve_run_config({**BASE, "student": "timm-resnet18", "method": "kd",
                            "teacher": {"name": "vit6_p4_32", "checkpoint": "t.pt"},
                            "solver": {"image_size": 64}})
    resolve_run_config({**BASE, "student": "timm-convnext_tiny"})     # a CNN takes any size


def _vit_distiller(method="vanilla", **solver):
    s = _solver(**solver)
    student = build_model("vit6_p4_32", num_classes=10)
    ctx = DistillContext(num_classes=10, num_train=8, epochs=1, device=torch.device("cpu"),
                         image_size=32, student_dims=feature_dims(student, 32),
                         label_smoothing=s["label_smoothing"])
    return build_distiller(method, student, None, {}, ctx), s


def test_adamw_and_timms_decay_groups():
    d, s = _vit_distiller(optimizer="adamw", weight_decay=0.05, weight_decay_on="weights")
    opt = build_optimizer(d, s)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)
    names = {id(p): n for n, p in d.student.named_parameters()}
    no_decay = {names[id(p)] for p in opt.param_groups[1]["params"]}
    decay = {names[id(p)] for p in opt.param_groups[0]["params"]}
    assert opt.param_groups[1]["weight_decay"] == 0.0 and opt.param_groups[0]["weight_decay"] == 0.05
    assert {"pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias",
            "head.bias"} <= no_decay
    assert {"blocks.0.attn.qkv.weight", "head.weight", "patch_embed.proj.weight"} <= decay
    assert len(decay) + len(no_decay) == len(list(d.student.parameters()))
    ref, s_ref = _vit_distiller()
    sgd = build_optimizer(ref, s_ref)                  # the reference: one SGD group, in order
    assert isinstance(sgd, torch.optim.SGD) and len(sgd.param_groups) == 1
    assert sgd.param_groups[0]["params"] == ref.trainable_parameters()
    assert recipe_capture_blocker(s) and recipe_capture_blocker(s_ref) is None


def test_label_smoothing_reaches_every_methods_cross_entropy():
    d, _ = _vit_distiller(label_smoothing=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    logits, losses = d.forward_train(x, y, None, StepState(epoch=1, step=1, epochs=1))
    assert torch.allclose(losses["loss_ce"], F.cross_entropy(logits, y, label_smoothing=0.1))
    assert not torch.allclose(losses["loss_ce"], F.cross_entropy(logits, y))


def test_mixup_soft_targets_sum_to_one_and_mix_the_images():
    s = _solver(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    mix = build_mixup(s, 10)
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    y = torch.arange(8)
    mixed, soft = mix(x.clone(), y)
    assert soft.shape == (8, 10) and torch.allclose(soft.sum(1), torch.ones(8))
    assert (soft > 0.5).sum() <= 8 and not torch.equal(mixed, x)
    assert build_mixup(_solver(), 10) is None


def test_clipping_bounds_the_gradient_norm():
    d, s = _vit_distiller(clip_grad_norm=0.01)
    opt = build_optimizer(d, s)
    batch = type("B", (), {"x": torch.randn(4, 3, 32, 32), "y": torch.tensor([0, 1, 2, 3])})()
    train_step(d, opt, batch, StepState(epoch=1, step=1, epochs=1), clip_grad_norm=0.01)
    norm = torch.norm(torch.stack([p.grad.norm() for p in d.trainable_parameters()]))
    assert float(norm) <= 0.01 * (1 + 1e-5)
    train_step(d, opt, batch, StepState(epoch=1, step=1, epochs=1))
    norm = torch.norm(torch.stack([p.grad.norm() for p in d.trainable_parameters()]))
    assert float(norm) > 0.1                    # unclipped, the same model's norm is far larger


def test_holdout_is_random_splits_split():
    data = load_dataset("digits")
    train_part, val = data.holdout(0.1, seed=666)
    ref_train, ref_val = torch.utils.data.random_split(
        range(data.num_train), [int(0.9 * data.num_train),
                                data.num_train - int(0.9 * data.num_train)],
        generator=torch.Generator().manual_seed(666))
    assert torch.equal(train_part.train_y, data.train_y[sorted(ref_train.indices)])
    assert torch.equal(val.test_y, data.train_y[sorted(ref_val.indices)])
    assert torch.equal(train_part.test_x, data.test_x)


def test_early_stopping_rule():
    rows = [{"epoch": e, "val_top1": v, "test_top1": 10.0 * e}
            for e, v in enumerate([50, 60, 60.005, 59, 61, 61, 61], 1)]
    assert not early_stop_due(rows[:3], patience=2, after=0)
    assert early_stop_due(rows[:4], patience=2, after=0)       # 60.005 is not 0.01 better
    assert not early_stop_due(rows[:5], patience=2, after=0)   # 61 is
    assert early_stop_due(rows, patience=2, after=0)
    assert not early_stop_due(rows, patience=2, after=5)       # only epochs 6, 7 count
    assert val_best(rows) == {"val_top1_best": 61, "epoch_val_best": 5, "top1_at_val_best": 50.0}


def test_a_run_stops_at_the_patience_and_stays_stopped(tmp_path):
    """With the LR at 0 the validation accuracy never improves: patience 2 stops after epoch 3."""
    cfg = {**BASE, "solver": {"epochs": 6, "val_fraction": 0.2, "early_stop_patience": 2,
                              "batch_size": 128, **LR_ZERO}}
    paths = RunPaths.in_dir(tmp_path / "run")
    rec = train(cfg, paths, device="cpu", progress=Progress(enabled=False))
    assert rec["epochs_run"] == 3 and rec["stopped_early"] is True
    assert rec["epoch_val_best"] == 1 and "val_top1_best" in rec
    log = paths.log_csv.read_text().splitlines()
    assert len(log) == 4 and "val_top1" in log[0]
    again = train(cfg, paths, device="cpu", progress=Progress(enabled=False))
    assert again["epochs_run"] == 3                       # resumed: nothing more is trained


def test_a_mixing_clipped_adamw_cosine_run_learns(tmp_path):
    cfg = {**BASE, "student": "resnet8",
           "solver": {"epochs": 3, "batch_size": 64, "optimizer": "adamw", "lr": 2e-3,
                      "weight_decay": 0.05, "weight_decay_on": "weights",
                      "lr_schedule": "cosine", "warmup_epochs": 1, "warmup_lr": 1e-4,
                      "min_lr": 1e-5, "label_smoothing": 0.1, "clip_grad_norm": 5.0,
                      "mixup_alpha": 0.8, "cutmix_alpha": 1.0}}
    rec = train(cfg, RunPaths.in_dir(tmp_path / "run"), device="cpu",
                progress=Progress(enabled=False))
    n = load_dataset("digits").num_train
    assert rec["samples_per_s"] > 0 and math.isfinite(rec["top1_last"])
    assert rec["top1_best"] > 20.0, rec["top1_best"]     # 10 classes: chance is 10 % (~55 here)
    hist = (tmp_path / "run/log.csv").read_text().splitlines()
    assert len(hist) == 4
    assert rec["config"]["solver"]["mixup_alpha"] == 0.8 and n // 64 * 64 < n   # drop_last


def test_head_only_training_leaves_the_rest_of_the_student_as_it_was(tmp_path):
    """``trainable: head`` (the multi-view project's head-only fine-tune)."""
    data = load_dataset("digits").head(128, 64)
    cfg = {**BASE, "solver": {"epochs": 1, "batch_size": 32, "trainable": "head"}}
    torch.manual_seed(0)
    start = build_model("resnet8", num_classes=10).state_dict()
    paths = RunPaths.in_dir(tmp_path / "run")
    train(cfg, paths, device="cpu", arrays=data, progress=Progress(enabled=False))
    end = torch.load(paths.final, weights_only=True)["model"]
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    assert changed == {"fc.weight", "fc.bias"}, sorted(changed)[:5]
    d, s = _vit_distiller(trainable="head")
    opt = build_optimizer(d, s)
    assert opt.param_groups[0]["params"] == list(d.student.get_classifier().parameters())
