"""MLKD: strong image vs PIL, loss vs a transcription of the official code, switches, training."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdsrc.data.augment import crop_flip_u8
from kdsrc.data.strong_aug import (OP_INDEX, RANDAUGMENT_OPS, StrongDraws, cutout_, draw_strong,
                                   pil_reference_cutout, pil_reference_op, randaugment_slot,
                                   randaugment_u8, strong_image)
from kdsrc.distillers import DistillContext, StepState, build_distiller
from kdsrc.errors import ConfigError
from kdsrc.losses.mlkd import (batch_correlation_loss, class_correlation_loss, mlkd_confidence_masks,
                               mlkd_loss_terms)
from kdsrc.models import build_model, feature_dims
from kdsrc_testutil import train_on_digits

TEMPS = (4.0, 3.0, 5.0, 2.0, 6.0)


# -- a transcription of the official KD_ours.forward_train loss (logits in, reduce=True) ----------

def _kd(zs, zt, T):
    return F.kl_div(F.log_softmax(zs / T, 1), F.softmax(zt / T, 1), reduction="none").sum(1).mean() * T ** 2


def _cc(zs, zt, T):
    ps, pt = F.softmax(zs / T, 1), F.softmax(zt / T, 1)
    return ((pt.t() @ pt - ps.t() @ ps) ** 2).sum() / zs.shape[1]


def _bc(zs, zt, T):
    ps, pt = F.softmax(zs / T, 1), F.softmax(zt / T, 1)
    return ((pt @ pt.t() - ps @ ps.t()) ** 2).sum() / zs.shape[0]


def official_mlkd(zw, zs, tw, ts, y, ce_w=0.1, kd_w=0.9):
    p = F.softmax(tw, 1)
    conf = p.max(1).values
    mask = conf.le(float(np.percentile(conf.numpy(), 50))).float()
    cconf = p.sum(0)
    cmask = cconf.le(float(np.percentile(cconf.numpy(), 50))).float()
    ce = ce_w * (F.cross_entropy(zw, y) + F.cross_entropy(zs, y))
    kd_weak = sum(kd_w * (_kd(zw, tw, T) * mask).mean() for T in TEMPS)
    kd_strong = (sum(kd_w * _kd(zs, ts, T) for T in (4.0, 3.0, 5.0))
                 + sum(kd_w * _kd(zw, tw, T) for T in (2.0, 6.0)))
    cc = sum(kd_w * (_cc(zw, tw, T) * cmask).mean() for T in TEMPS)
    bc = sum(kd_w * (_bc(zw, tw, T) * mask).mean() for T in TEMPS)
    cc_strong = (sum(kd_w * _cc(zs, ts, T) for T in (4.0, 3.0, 5.0))
                 + sum(kd_w * _cc(zw, tw, T) for T in (2.0, 6.0)))
    bc_strong = sum(kd_w * (_bc(zs, ts, T) * mask).mean() for T in TEMPS)
    return {"ce": ce, "kd": kd_weak + kd_strong, "cc": cc, "bc": bc,
            "kd_weak": kd_weak, "kd_strong": kd_strong, "cc_strong": cc_strong, "bc_strong": bc_strong}


def _logits(seed, b=16, c=10):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, generator=g, dtype=torch.float64) * 3 for _ in range(4)]


def _terms(zw, zs, tw, ts, **kw):
    q_w = {T: F.softmax(tw / T, 1) for T in TEMPS}
    q_s = {T: F.softmax(ts / T, 1) for T in TEMPS}
    sm, cm = mlkd_confidence_masks(F.softmax(tw, 1))
    return mlkd_loss_terms(zw, zs, q_w, q_s, sm, cm, **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_the_official_code(seed):
    zw, zs, tw, ts = _logits(seed)
    ref = official_mlkd(zw, zs, tw, ts, torch.arange(16) % 10)
    ours = _terms(zw, zs, tw, ts, strong_relations=True)
    for key in ("kd_weak", "kd_strong", "cc", "bc", "cc_strong", "bc_strong"):
        assert float(ours[key]) == pytest.approx(float(ref[key]), rel=1e-5), key
    assert set(_terms(zw, zs, tw, ts)) == {"kd_weak", "kd_strong", "cc", "bc"}   # strong relations left out


def test_masks_are_batch_medians():
    zw, _, tw, _ = _logits(3, b=15)
    p = F.softmax(tw, 1)
    sm, cm = mlkd_confidence_masks(p)
    conf = p.max(1).values.numpy()
    assert np.array_equal(sm.numpy(), conf <= np.percentile(conf, 50))
    cconf = p.sum(0).numpy()
    assert np.array_equal(cm.numpy(), cconf <= np.percentile(cconf, 50))
    assert sm.sum() == 8   # odd batch: the median sample is kept


def test_zero_for_identical_logits_and_switches():
    zw, zs, _, _ = _logits(4)
    t = _terms(zw, zs, zw.clone(), zs.clone(), strong_relations=True)
    for key, v in t.items():
        assert abs(float(v)) < 1e-5, key
    zw, zs, tw, ts = _logits(5)
    base = _terms(zw, zs, tw, ts)
    clean = _terms(zw, zs, tw, ts, strong_reuses_weak_at=())
    assert float(clean["kd_strong"]) == pytest.approx(
        0.9 * sum(float(_kd(zs, ts, T)) for T in TEMPS), rel=1e-6)
    assert float(clean["kd_strong"]) != pytest.approx(float(base["kd_strong"]), rel=1e-3)
    per = _terms(zw, zs, tw, ts, mask_mode="per_sample")
    sm, cm = mlkd_confidence_masks(F.softmax(tw, 1))
    ref = 0.9 * sum(float((class_correlation_loss(zw, F.softmax(tw / T, 1), temperature=T, reduce=False)
                           * cm.double()).mean()) for T in TEMPS)
    assert float(per["cc"]) == pytest.approx(ref, rel=1e-6)
    ref_bc = 0.9 * sum(float((batch_correlation_loss(zw, F.softmax(tw / T, 1), temperature=T, reduce=False)
                              * sm.double()).mean()) for T in TEMPS)
    assert float(per["bc"]) == pytest.approx(ref_bc, rel=1e-6)


# -- the strong image ---------------------------------------------------------------------------------

def _images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    a[n // 2:] = (rng.integers(0, 4, (n - n // 2, 1, 1, 3)) * 40
                  + np.arange(32)[None, :, None, None] * 3).astype(np.uint8)   # smooth, few levels
    return a


@pytest.mark.parametrize("name", [o[0] for o in RANDAUGMENT_OPS])
def test_every_randaugment_op_equals_pil(name):
    imgs = _images()
    lo, hi = next((lo, hi) for n, lo, hi in RANDAUGMENT_OPS if n == name)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    vals = torch.linspace(lo, hi, 8, dtype=torch.float64)[order]
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float()
    out = randaugment_slot(x, torch.full((8,), OP_INDEX[name]), vals).permute(0, 2, 3, 1).numpy()
    for i in range(8):
        np.testing.assert_array_equal(out[i].astype(np.uint8),
                                      pil_reference_op(imgs[i], name, float(vals[i])),
                                      err_msg=f"{name} v={float(vals[i])}")


def test_cutout_equals_pil_and_pipeline_equals_pil_chain():
    imgs = _images(seed=2)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    torch.manual_seed(0)
    d = draw_strong(8, pad=4, flip=True)
    out = cutout_(x.float(), d.cutout).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    for i in range(8):
        np.testing.assert_array_equal(out[i], pil_reference_cutout(imgs[i], *map(float, d.cutout[i])))
    # crop + flip + 2 ops + cutout, against PIL applied op by op
    got = randaugment_u8(crop_flip_u8(x, d.dy, d.dx, d.flip, pad=4), d).permute(0, 2, 3, 1).numpy()
    cropped = crop_flip_u8(x, d.dy, d.dx, d.flip, pad=4).permute(0, 2, 3, 1).numpy()
    for i in range(8):
        ref = cropped[i]
        for s in range(2):
            ref = pil_reference_op(np.ascontiguousarray(ref), RANDAUGMENT_OPS[int(d.ops[i, s])][0],
                                   float(d.values[i, s]))
        ref = pil_reference_cutout(np.ascontiguousarray(ref), *map(float, d.cutout[i]))
        np.testing.assert_array_equal(got[i], ref)


def test_draws_are_deterministic_given_torch_rng_and_in_range():
    torch.manual_seed(7)
    a = draw_strong(512, pad=4, flip=False)
    torch.manual_seed(7)
    b = draw_strong(512, pad=4, flip=False)
    assert torch.equal(a.ops, b.ops) and torch.equal(a.values, b.values) and torch.equal(a.dy, b.dy)
    assert set(a.ops.flatten().tolist()) == set(range(14)) and not a.flip.any()
    lo = torch.tensor([o[1] for o in RANDAUGMENT_OPS], dtype=torch.float64)[a.ops]
    hi = torch.tensor([o[2] for o in RANDAUGMENT_OPS], dtype=torch.float64)[a.ops]
    assert ((a.values >= lo) & (a.values <= hi)).all()
    assert (a.cutout[:, 0] < 0.5).all() and int(a.dy.max()) <= 8
    x = torch.from_numpy(_images()).permute(0, 3, 1, 2).contiguous()
    d = StrongDraws(ops=a.ops[:8], values=a.values[:8], cutout=a.cutout[:8], dy=a.dy[:8], dx=a.dx[:8],
                    flip=a.flip[:8])
    v1 = strong_image(x, d, pad=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    v2 = strong_image(x, d, pad=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert torch.equal(v1, v2) and v1.dtype == torch.float32 and v1.shape == (8, 3, 32, 32)


# -- the distiller -----------------------------------------------------------------------------------

def _distiller(settings=None, n=12):
    student, teacher = build_model("resnet8", num_classes=10), build_model("resnet8", num_classes=10)
    imgs = torch.from_numpy(_images(n)).permute(0, 3, 1, 2).contiguous()
    ctx = DistillContext(num_classes=10, num_train=n, epochs=1, device=torch.device("cpu"),
                         train_images=imgs, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), pad=4, flip=False,
                         student_dims=feature_dims(student, 32), teacher_dims=feature_dims(teacher, 32))
    return build_distiller("mlkd", student, teacher, settings or {}, ctx), imgs


def test_teacher_asked_for_weak_then_strong_with_batch_none():
    d, imgs = _distiller({"strong_crop": "shared"})
    idx = torch.tensor([3, 1, 4, 0, 5, 9, 2, 6])
    z = torch.zeros(8, dtype=torch.int64)
    from kdsrc.data.augment import augment
    x = augment(imgs[idx], z + 4, z + 4, None, pad=4, mean=d.ctx.mean, std=d.ctx.std)
    batch = SimpleNamespace(x=x, y=idx % 10, index=idx, dy=z + 4, dx=z + 4,
                            flip=torch.zeros(8, dtype=torch.bool))
    seen = []

    def spy(out, x_, y_, b_):
        seen.append((x_, b_))
        return out

    d.teacher_transform = spy
    torch.manual_seed(0)
    logits, losses = d.forward_train(x, batch.y, batch, StepState(1, 1, 1))
    assert [b is batch for _, b in seen] == [True, False] and seen[1][1] is None
    assert torch.equal(seen[0][0], x) and not torch.equal(seen[1][0], x)
    assert set(losses) == {"loss_ce", "loss_ce_strong", "loss_kd_weak", "loss_kd_strong", "loss_cc",
                           "loss_bc"}
    assert all(torch.isfinite(v) for v in losses.values())
    # the shared-crop strong image is the same images, same crop, then RandAugment + Cutout
    torch.manual_seed(0)
    again = d.strong_images(x, batch)
    assert torch.equal(again, seen[1][0])
    d.settings["strong_relations"] = True
    more = d.forward_train(x, batch.y, batch, StepState(1, 1, 1))[1]
    assert {"loss_cc_strong", "loss_bc_strong"} <= set(more)


def test_defaults_are_the_official_cifar_settings():
    d, _ = _distiller()
    assert d.settings == {"ce_weight": 0.1, "kd_weight": 0.9, "temperatures": [4.0, 3.0, 5.0, 2.0, 6.0],
                          "strong_reuses_weak_at": [2.0, 6.0], "strong_relations": False,
                          "mask_mode": "as_coded", "strong_crop": "independent", "randaugment_n": 2,
                          "cutout_max": 0.5, "bc_double_softmax": False}


@pytest.mark.parametrize("settings,key", [({"mask_mode": "x"}, "method.mask_mode"),
                                          ({"strong_crop": "x"}, "method.strong_crop"),
                                          ({"temperatures": []}, "method.temperatures"),
                                          ({"temperatures": [4.0, -1.0]}, "method.temperatures"),
                                          ({"strong_reuses_weak_at": [7.0]}, "method.strong_reuses_weak_at"),
                                          ({"cutout_max": 2.0}, "method.cutout_max"),
                                          ({"kd_weight": -1.0}, "method.kd_weight")])
def test_bad_settings_name_the_key(settings, key):
    with pytest.raises(ConfigError, match=key):
        _distiller(settings)


def test_trains_two_epochs_on_digits_with_every_term_logged(tmp_path, digits_teacher):
    record, rows = train_on_digits(tmp_path, digits_teacher, {"name": "mlkd"},
                                   solver={"lr": 0.025})
    assert [r["epoch"] for r in rows] == ["1", "2"]
    terms = ("loss_ce", "loss_ce_strong", "loss_kd_weak", "loss_kd_strong", "loss_cc", "loss_bc")
    for r in rows:
        for col in terms + ("train_loss", "test_top1"):
            assert math.isfinite(float(r[col])), col
        assert sum(float(r[c]) for c in terms) == pytest.approx(float(r["train_loss"]), rel=1e-4)
    assert record["method"] == "mlkd" and record["switches"]["strong_crop"] == "independent"
