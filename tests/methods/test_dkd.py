"""DKD: loss maths against the DKD decomposition and mdistiller's formula, ramp, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdsrc.distillers import DistillContext, StepState, build_distiller
from kdsrc.errors import ConfigError
from kdsrc.losses.dkd import dkd_loss, dkd_parts
from kdsrc.models import build_model, feature_dims
from kdsrc_testutil import train_on_digits


def mdistiller_dkd(logits_student, logits_teacher, target, alpha, beta, temperature):
    """A direct transcription of mdistiller ``distillers/DKD.py`` (``dkd_loss``)."""
    gt_mask = torch.zeros_like(logits_student).scatter_(1, target.unsqueeze(1), 1).bool()
    other_mask = torch.ones_like(logits_student).scatter_(1, target.unsqueeze(1), 0).bool()
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)

    def cat_mask(t):
        return torch.cat([(t * gt_mask).sum(1, keepdim=True), (t * other_mask).sum(1, keepdim=True)], 1)

    pred_student, pred_teacher = cat_mask(pred_student), cat_mask(pred_teacher)
    tckd = (F.kl_div(torch.log(pred_student), pred_teacher, reduction="sum")
            * temperature ** 2 / target.shape[0])
    pt2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    ls2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd = F.kl_div(ls2, pt2, reduction="sum") * temperature ** 2 / target.shape[0]
    return alpha * tckd + beta * nckd


def _random(seed, b=16, c=10, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    t = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, c, (b,), generator=g)
    return s, t, y


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_equals_tckd_plus_weighted_nckd_per_sample(temperature):
    """DKD paper Eq. 4: KD_i = TCKD_i + (1 − p_t,gt,i)·NCKD_i, checked sample by sample."""
    s, t, y = _random(0, b=12, c=7)
    q = F.softmax(t / temperature, dim=1)
    tckd, nckd = dkd_parts(s, q, y, temperature=temperature, reduction="none")
    log_p = F.log_softmax(s.double() / temperature, dim=1)
    kd = (q * (q.log() - log_p)).sum(1) * temperature ** 2
    q_gt = q.gather(1, y[:, None]).squeeze(1)
    expect = tckd.double() + (1 - q_gt) * nckd.double()
    assert tckd.shape == nckd.shape == (12,)
    assert torch.allclose(kd, expect, rtol=1e-5, atol=1e-6), (kd, expect)
    # and every term is a KL: non-negative
    assert (tckd >= -1e-7).all() and (nckd >= -1e-7).all()


@pytest.mark.parametrize("seed, alpha, beta, temperature", [
    (1, 1.0, 8.0, 4.0), (2, 1.0, 2.0, 4.0), (3, 0.5, 6.0, 1.0), (4, 2.0, 8.0, 2.0)])
def test_matches_mdistiller_formula(seed, alpha, beta, temperature):
    s, t, y = _random(seed, b=32, c=100)
    ref = mdistiller_dkd(s.float(), t.float(), y, alpha, beta, temperature)
    got = dkd_loss(s.float(), F.softmax(t.float() / temperature, dim=1), y, alpha=alpha, beta=beta,
                   temperature=temperature)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6), (got, ref)
    assert got.dtype == torch.float32


def test_default_hyperparameters_are_the_reference():
    s, t, y = _random(5, b=8, c=10)
    q = F.softmax(t.float() / 4.0, dim=1)
    assert torch.allclose(dkd_loss(s.float(), q, y), mdistiller_dkd(s.float(), t.float(), y, 1.0, 8.0, 4.0),
                          rtol=1e-5)


def test_teacher_probabilities_need_not_sum_to_one():
    """Angular-KD's ensemble (sum ≈ 2.44): TCKD on [q_gt, Σ q_other] as given, NCKD renormalised."""
    s, t, y = _random(6, b=8, c=10)
    q = F.softmax(t / 4, dim=1) * 2.44
    tckd, nckd = dkd_parts(s, q, y, temperature=4.0)
    gt = F.one_hot(y, 10).bool()
    b_t = torch.stack([(q * gt).sum(1), (q * ~gt).sum(1)], 1)
    p = F.softmax(s / 4, dim=1)
    b_s = torch.stack([(p * gt).sum(1), (p * ~gt).sum(1)], 1)
    assert torch.allclose(tckd.double(), (b_t * (b_t.log() - b_s.log())).sum(1).mean() * 16, rtol=1e-5)
    _, nckd_plain = dkd_parts(s, q / 2.44, y, temperature=4.0)
    assert torch.allclose(nckd, nckd_plain, rtol=1e-5)


def test_gradient_reaches_the_student_and_no_nan_for_extreme_logits():
    s = (torch.randn(4, 10) * 200).requires_grad_()
    q = F.softmax(torch.randn(4, 10) * 200 / 4, dim=1)  # contains exact zeros
    y = torch.tensor([0, 1, 2, 3])
    loss = dkd_loss(s, q, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_gradient_through_teacher_probabilities_is_finite():
    """Angular-KD's ensemble q carries gradients into its views: none may be NaN, although the
    masked NCKD target is exactly 0 at the target class (and q itself may contain zeros)."""
    z = (torch.randn(6, 10) * 3).requires_grad_()
    q = F.softmax(z / 4, dim=1) * 2.44
    s, y = torch.randn(6, 10), torch.tensor([0, 1, 2, 3, 4, 5])
    dkd_loss(s, q, y).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    q0 = torch.zeros(2, 5)
    q0[:, 1:3] = 0.5
    q0.requires_grad_()
    loss = dkd_loss(torch.randn(2, 5), q0, torch.tensor([1, 4]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(q0.grad).all()


def _distiller(**settings):
    torch.manual_seed(0)
    student, teacher = build_model("resnet8", num_classes=10), build_model("resnet8", num_classes=10)
    ctx = DistillContext(num_classes=10, num_train=100, epochs=240, device=torch.device("cpu"),
                         student_dims=feature_dims(student), teacher_dims=feature_dims(teacher))
    return build_distiller("dkd", student, teacher, settings, ctx)


def test_warmup_factor_from_the_epoch():
    d = _distiller()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    got = {}
    for epoch in (1, 10, 20, 21, 240):
        with torch.no_grad():
            _, losses = d.forward_train(x, y, None, StepState(epoch=epoch, step=1, epochs=240))
        got[epoch] = (float(losses["loss_tckd"]), float(losses["loss_nckd"]))
    full = got[20]
    for epoch, factor in ((1, 0.05), (10, 0.5), (21, 1.0), (240, 1.0)):
        assert math.isclose(got[epoch][0], factor * full[0], rel_tol=1e-5)
        assert math.isclose(got[epoch][1], factor * full[1], rel_tol=1e-5)
    # the distiller's NCKD term is β·NCKD
    with torch.no_grad():
        t_logits, _ = d.teacher(x)
        s_logits, _ = d.student(x)
        _, nckd = dkd_parts(s_logits, F.softmax(t_logits / 4, 1), y)
    assert math.isclose(full[1], 8.0 * float(nckd), rel_tol=1e-4)


def test_warmup_setting_changes_the_ramp():
    d = _distiller(warmup=5)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with torch.no_grad():
        a = d.forward_train(x, y, None, StepState(epoch=1, step=1, epochs=10))[1]["loss_tckd"]
        b = d.forward_train(x, y, None, StepState(epoch=5, step=1, epochs=10))[1]["loss_tckd"]
    assert math.isclose(float(a), 0.2 * float(b), rel_tol=1e-5)


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match="method.temperature"):
        _distiller(temperature=0.0)
    with pytest.raises(ConfigError, match="method.warmup"):
        _distiller(warmup=-1)


def test_trains_two_epochs_on_digits_with_every_term_logged(tmp_path, digits_teacher):
    record, rows = train_on_digits(tmp_path, digits_teacher, {"name": "dkd"})
    assert len(rows) == 2
    cols = {"loss_ce", "loss_tckd", "loss_nckd"}
    for r in rows:
        assert cols == {k for k in r if k.startswith("loss_")}
        assert all(math.isfinite(float(r[c])) for c in cols)
        assert math.isclose(sum(float(r[c]) for c in cols), float(r["train_loss"]), rel_tol=1e-4)
    # ramp: epoch 2 weighs the DKD terms 0.1, epoch 1 0.05 — both small next to CE (NCKD/CE
    # measured 0.48-0.50 on every kernel path: benchmarks/results/cpu-spread-methods.json)
    assert float(rows[0]["loss_nckd"]) < float(rows[0]["loss_ce"])
    assert record["switches"] == {"ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0,
                                  "warmup": 20}
    assert record["extra_params"] == 0
