"""RSD (redundancy suppression, ICCV 2025): the loss maths, the projector, and a short run."""

from __future__ import annotations

import math

import pytest
import torch

from kdsrc.distillers import METHODS, DistillContext, StepState, build_distiller
from kdsrc.errors import ConfigError
from kdsrc.losses import batch_standardize, rsd_loss
from kdsrc.models import build_model, feature_dims
from kdsrc_testutil import DROP_MARGIN, assert_decreased, digits_head, train_on_digits


def reference_rsd_loss(feats_stu, feats_tea, kappa=0.01):
    """spacewanderx/RSD distillers/rsd.py, verbatim maths."""
    def normalize(f):
        return (f - f.mean(dim=0)) / (f.std(dim=0, unbiased=False) + 1e-5)

    b, d = feats_stu.shape
    rcc = torch.mm(normalize(feats_tea).T, normalize(feats_stu)) / b
    idt = torch.eye(d)
    loss = (rcc - idt).pow(2)
    loss[(1 - idt).bool()] *= kappa
    return loss.sum()


def hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def test_zero_for_identical_decorrelated_features():
    # columns 1..4 of an 8x8 Hadamard matrix: zero mean, unit biased std, mutually orthogonal
    f_t = hadamard(8)[:, 1:5]
    assert torch.allclose(batch_standardize(f_t), f_t, atol=1e-4)
    assert float(rsd_loss(f_t, f_t)) < 1e-8
    # invariant to a per-dimension affine map of either side (batch standardisation)
    scale, shift = torch.tensor([3.0, 0.5, 2.0, 7.0]), torch.tensor([5.0, -1.0, 0.0, 2.0])
    assert float(rsd_loss(f_t * scale + shift, f_t, kappa=1.0)) < 1e-8
    # a sign flip of one dimension costs (−1 − 1)² = 4
    flipped = f_t * torch.tensor([1.0, -1.0, 1.0, 1.0])
    assert math.isclose(float(rsd_loss(flipped, f_t)), 4.0, rel_tol=1e-4)


def test_kappa_weights_the_off_diagonal():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(32, 6, generator=g), torch.randn(32, 6, generator=g)
    z_s, z_t = batch_standardize(s), batch_standardize(t)
    c = z_t.T @ z_s / 32
    on = ((torch.diagonal(c) - 1) ** 2).sum()
    off = (c ** 2).sum() - (torch.diagonal(c) ** 2).sum()
    assert torch.allclose(rsd_loss(s, t, kappa=0.0), on, rtol=1e-6)
    for kappa in (0.01, 0.5, 2.0):
        assert torch.allclose(rsd_loss(s, t, kappa=kappa), on + kappa * off, rtol=1e-5)
        assert torch.allclose(rsd_loss(s, t, kappa=kappa), reference_rsd_loss(s, t, kappa),
                              rtol=1e-5)
    # C is teacher-by-student: swapping the roles transposes it, the loss is symmetric
    assert torch.allclose(rsd_loss(t, s), rsd_loss(s, t), rtol=1e-6)
    with pytest.raises(ValueError):
        rsd_loss(s, t[:, :5])


def _ctx(student, teacher):
    return DistillContext(num_classes=10, num_train=100, epochs=1, device=torch.device("cpu"),
                          student_dims=feature_dims(student), teacher_dims=feature_dims(teacher))


@pytest.mark.parametrize("gamma", [1, 2, 3])
def test_projector_parameter_count_and_init(gamma):
    student = build_model("resnet8", num_classes=10)          # pooled 64
    teacher = build_model("resnet8x4", num_classes=10)        # pooled 256
    d_s, d_t = 64, 256
    dist = build_distiller("rsd", student, teacher, {"gamma": gamma}, _ctx(student, teacher))
    assert dist.extra_param_count() == gamma * d_s ** 2 + 2 * gamma * d_s + gamma * d_s * d_t
    lin1, bn, act, lin2 = dist.projector
    assert lin1.bias is None and lin2.bias is None and isinstance(act, torch.nn.GELU)
    assert lin1.weight.shape == (gamma * d_s, d_s) and lin2.weight.shape == (d_t, gamma * d_s)
    assert isinstance(bn, torch.nn.BatchNorm1d) and bn.num_features == gamma * d_s
    w = torch.cat([lin1.weight.flatten(), lin2.weight.flatten()]).detach()
    assert abs(float(w.std()) - 0.02) < 0.003 and float(w.abs().max()) < 0.2
    # the projector is trained with the student, the teacher is not
    ids = {id(p) for p in dist.trainable_parameters()}
    assert all(id(p) in ids for p in dist.projector.parameters())
    assert not any(id(p) in ids for p in teacher.parameters())


def test_settings_and_cache_needs():
    cls = METHODS["rsd"]
    assert cls.defaults == {"ce_weight": 1.0, "rsd_weight": 0.1, "kappa": 0.01, "gamma": 2,
                            "label_smoothing": 0.0}
    assert cls.cache_needs == frozenset({"pooled_feat"})
    student = build_model("resnet8", num_classes=10)
    with pytest.raises(ConfigError, match="gamma"):
        build_distiller("rsd", student, student, {"gamma": 2.5}, _ctx(student, student))


def test_forward_terms_label_smoothing_and_tiny_batch():
    torch.manual_seed(0)
    student = build_model("resnet8", num_classes=10)
    teacher = build_model("resnet8x4", num_classes=10).eval()
    x, y = torch.randn(6, 3, 32, 32), torch.arange(6) % 10
    st = StepState(epoch=1, step=1, epochs=1)
    dist = build_distiller("rsd", student, teacher, {"label_smoothing": 0.1, "rsd_weight": 0.5},
                           _ctx(student, teacher))
    dist.train()
    logits, losses = dist.forward_train(x, y, None, st)
    assert set(losses) == {"loss_ce", "loss_rsd"}
    with torch.no_grad():
        f_t = teacher(x)[1]["pooled_feat"]
        f_s = student(x)[1]["pooled_feat"]
    expect = 0.5 * reference_rsd_loss(dist.projector(f_s), f_t, 0.01)
    assert torch.allclose(losses["loss_rsd"], expect, rtol=1e-4)
    assert torch.allclose(losses["loss_ce"],
                          torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1))
    losses["loss_rsd"].backward()
    assert dist.projector[0].weight.grad is not None
    # a batch of one sample: no batch statistics, the RSD term is 0 and nothing fails
    _, one = dist.forward_train(x[:1], y[:1], None, st)
    assert float(one["loss_rsd"].detach()) == 0.0


def test_rsd_trains_two_epochs_on_digits(tmp_path, digits_teacher):
    """Two epochs on a 384-image slice of digits (96 test images), to keep the file fast."""
    with digits_head(384, 96):
        record, rows = train_on_digits(tmp_path, digits_teacher, {"name": "rsd"}, seed=1)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        for col in ("loss_ce", "loss_rsd", "train_loss", "test_top1"):
            assert math.isfinite(float(r[col])), col
        assert math.isclose(float(r["loss_ce"]) + float(r["loss_rsd"]), float(r["train_loss"]),
                            rel_tol=1e-4)
        assert float(r["loss_rsd"]) > 0
    # the RSD term goes down as the projected student feature aligns with the teacher's (by far
    # more than the <= 0.13 it moves at learning rate 0)
    assert_decreased(float(rows[0]["loss_rsd"]), float(rows[1]["loss_rsd"]), DROP_MARGIN,
                     "RSD term")
    assert record["extra_params"] == 2 * 64 * 64 + 2 * 2 * 64 + 2 * 64 * 64
    assert record["switches"] == {"ce_weight": 1.0, "rsd_weight": 0.1, "kappa": 0.01, "gamma": 2,
                                  "label_smoothing": 0.0}
    assert record["teacher_cache_used"] is False
