"""ReviewKD: HCL maths, ABF geometry derived for any pair of the zoo, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdsrc.distillers import DistillContext, StepState, build_distiller
from kdsrc.errors import ConfigError
from kdsrc.losses.reviewkd import hcl_loss
from kdsrc.models import build_model, feature_dims
from kdsrc_testutil import train_on_digits


def mdistiller_hcl(fstudent, fteacher):
    """Transcription of mdistiller ``distillers/ReviewKD.py`` ``hcl_loss``."""
    loss_all = 0.0
    for fs, ft in zip(fstudent, fteacher):
        h = fs.shape[2]
        loss = F.mse_loss(fs, ft, reduction="mean")
        cnt, tot = 1.0, 1.0
        for l in [4, 2, 1]:
            if l >= h:
                continue
            cnt /= 2.0
            loss += F.mse_loss(F.adaptive_avg_pool2d(fs, (l, l)), F.adaptive_avg_pool2d(ft, (l, l))) * cnt
            tot += cnt
        loss_all = loss_all + loss / tot
    return loss_all


def test_hcl_hand_made():
    # 2x2 checkerboard vs zeros: full MSE 1; only the 1x1 pool is used (4, 2 >= H), mean 0 → 0
    ft = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).view(1, 1, 2, 2)
    assert math.isclose(float(hcl_loss([torch.zeros_like(ft)], [ft])), 1 / 1.5, rel_tol=1e-6)
    # 8x8 constant c: every pooled MSE is c², weights 1, 1/2, 1/4, 1/8 → c²
    c = torch.full((2, 3, 8, 8), 3.0)
    assert math.isclose(float(hcl_loss([torch.zeros_like(c)], [c])), 9.0, rel_tol=1e-6)
    # 8x8 checkerboard: pools to 4x4/2x2/1x1 are all 0 → 1 / (1 + 1/2 + 1/4 + 1/8)
    cb = (torch.arange(8)[:, None] + torch.arange(8)[None, :]).remainder(2).float() * 2 - 1
    cb = cb.view(1, 1, 8, 8)
    assert math.isclose(float(hcl_loss([torch.zeros_like(cb)], [cb])), 1 / 1.875, rel_tol=1e-6)
    # a 1x1 (pooled) level: plain MSE; levels are summed
    p_s, p_t = torch.zeros(2, 4, 1, 1), torch.ones(2, 4, 1, 1) * 2
    total = hcl_loss([torch.zeros_like(cb), p_s], [cb, p_t])
    assert math.isclose(float(total), 1 / 1.875 + 4.0, rel_tol=1e-6)


def test_hcl_matches_mdistiller_on_random_maps():
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 8, 32, 32), (4, 16, 16, 16), (4, 32, 8, 8), (4, 32, 4, 4), (4, 64, 1, 1)]
    fs = [torch.randn(s, generator=g) for s in shapes]
    ft = [torch.randn(s, generator=g) for s in shapes]
    assert torch.allclose(hcl_loss(fs, ft), mdistiller_hcl(fs, ft), rtol=1e-6)
    with pytest.raises(ValueError):
        hcl_loss(fs[:2], ft[:3])


def _build(t_name, s_name, **settings):
    torch.manual_seed(0)
    student, teacher = build_model(s_name, num_classes=10), build_model(t_name, num_classes=10)
    ctx = DistillContext(num_classes=10, num_train=100, epochs=240, device=torch.device("cpu"),
                         student_dims=feature_dims(student), teacher_dims=feature_dims(teacher))
    return build_distiller("reviewkd", student, teacher, settings, ctx)


# (teacher, student, mdistiller IN_CHANNELS, OUT_CHANNELS, SHAPES (deep → shallow)) where the
# reference cfg.py has the lists; None where it has none
PAIRS = [
    ("resnet32x4", "resnet8x4", [64, 128, 256, 256], [64, 128, 256, 256], [1, 8, 16, 32]),
    ("wrn_40_2", "wrn_16_2", [32, 64, 128, 128], [32, 64, 128, 128], [1, 8, 16, 32]),
    ("vgg13", "vgg8", [128, 256, 512, 512, 512], [128, 256, 512, 512, 512], [1, 4, 4, 8, 16]),
    ("wrn_40_2", "resnet8x4", [64, 128, 256, 256], [32, 64, 128, 128], [1, 8, 16, 32]),
    ("resnet32x4", "ShuffleV2", [116, 232, 464, 1024], [64, 128, 256, 256], [1, 4, 8, 16]),
    ("vgg13", "MobileNetV2", [12, 16, 48, 160, 1280], [128, 256, 512, 512, 512], [1, 2, 4, 8, 16]),
    ("resnet32x4", "vgg8", [256, 512, 512, 512], [64, 128, 256, 256], [1, 4, 4, 8]),
]


@pytest.mark.parametrize("t_name, s_name, in_ch, out_ch, shapes", PAIRS,
                         ids=[f"{t}-{s}" for t, s, *_ in PAIRS])
def test_geometry_and_forward_for_zoo_pairs(t_name, s_name, in_ch, out_ch, shapes):
    d = _build(t_name, s_name)
    head = d.review
    assert [c for c, _, _ in head.student_levels] == in_ch
    assert [c for c, _, _ in head.teacher_levels] == out_ch
    assert [h for _, h, _ in head.student_levels][::-1] == shapes
    assert head.mid_channel == min(512, in_ch[-1])
    assert head.abfs[0].att_conv is None and all(a.att_conv is not None for a in head.abfs[1:])
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    _, s_feats = d.student(x)
    fused = head(d.student_maps(s_feats))
    t_logits, t_feats = d.teacher(x)
    t_maps = d.teacher_maps(t_feats)
    assert [tuple(f.shape) for f in fused] == [tuple(t.shape) for t in t_maps]
    logits, losses = d.forward_train(x, y, None, StepState(epoch=20, step=1, epochs=240))
    assert set(losses) == {"loss_ce", "loss_reviewkd"}
    assert torch.isfinite(losses["loss_reviewkd"])
    losses["loss_reviewkd"].backward()
    assert all(p.grad is not None for p in head.parameters())


def test_state_dict_layout_and_extra_params_match_the_reference():
    d = _build("resnet32x4", "resnet8x4")
    keys = set(d.review.state_dict())
    assert "abfs.0.conv1.0.weight" in keys and "abfs.0.att_conv.0.weight" not in keys
    assert "abfs.3.att_conv.0.weight" in keys
    # deepest block: 256 → mid 256 (1x1), 256 → 256 (3x3); no attention
    assert tuple(d.review.abfs[0].conv2[0].weight.shape) == (256, 256, 3, 3)
    assert d.extra_param_count() == sum(p.numel() for p in d.review.parameters())


def test_warmup_and_weights():
    d = _build("resnet8", "resnet8", kd_weight=1.0)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with torch.no_grad():
        a = d.forward_train(x, y, None, StepState(epoch=1, step=1, epochs=240))[1]
        b = d.forward_train(x, y, None, StepState(epoch=20, step=1, epochs=240))[1]
    assert set(a) == {"loss_ce", "loss_reviewkd", "loss_kd"}
    assert math.isclose(float(a["loss_reviewkd"]), 0.05 * float(b["loss_reviewkd"]), rel_tol=1e-5)
    assert math.isclose(float(a["loss_kd"]), float(b["loss_kd"]), rel_tol=1e-6)  # no ramp on KD
    with pytest.raises(ConfigError, match=r"method\.warmup"):
        _build("resnet8", "resnet8", warmup=-2)


def test_trains_two_epochs_on_digits_with_every_term_logged(tmp_path, digits_teacher):
    record, rows = train_on_digits(tmp_path, digits_teacher, {"name": "reviewkd", "kd_weight": 1.0})
    cols = {"loss_ce", "loss_reviewkd", "loss_kd"}
    assert len(rows) == 2
    for r in rows:
        assert cols == {k for k in r if k.startswith("loss_")}
        assert all(math.isfinite(float(r[c])) for c in cols)
        assert math.isclose(sum(float(r[c]) for c in cols), float(r["train_loss"]), rel_tol=1e-4)
    assert record["extra_params"] > 0
